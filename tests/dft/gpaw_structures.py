"""The three GPAW reference crystals of the physics tests and the benchmark."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure


def nimnsb(a: float = 5.90) -> Structure:
    """Half-Heusler NiMnSb (C1b, F-43m): Mn 4a, Sb 4b, Ni 4c; primitive cell, 3 atoms."""
    conv = Structure.from_spacegroup(
        "F-43m",
        Lattice.cubic(a),
        ["Mn", "Sb", "Ni"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
    )
    return conv.get_primitive_structure()


def bcc_fe(a: float = 2.8665) -> Structure:
    """bcc Fe at the experimental lattice constant, primitive cell (1 atom)."""
    return Structure(
        Lattice.cubic(a), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()


def diamond_si(a: float = 5.43) -> Structure:
    """Diamond Si, primitive cell (2 atoms)."""
    return Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(a), ["Si"], [[0, 0, 0]]
    ).get_primitive_structure()
