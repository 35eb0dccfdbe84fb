"""The cell handed to GPAW: Niggli-reduced where GPAW would warn "Results may be wrong!"."""

from __future__ import annotations

import warnings

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from smoacs_flows.dft.gpaw_engine import gpaw_cell


def _rhombohedral(alpha: float) -> Structure:
    """A three-site rhombohedral cell (the primitive standard cell of an R lattice)."""
    return Structure(
        Lattice.rhombohedral(6.0, alpha),
        ["Hf", "Re", "C"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
        site_properties={"magmom": [0.5, 1.5, 0.0]},
    )


def test_acute_rhombohedral_cell_is_niggli_reduced_for_gpaw() -> None:
    s = _rhombohedral(37.5)  # the angle GPAW warned about in the half-metal benchmark
    c = gpaw_cell(s)
    # a Niggli-reduced cell has every angle within 60-120 degrees (|cos| <= 1/2)
    assert all(60.0 - 1e-6 <= a <= 120.0 + 1e-6 for a in c.lattice.angles), c.lattice.angles
    assert np.isclose(c.volume, s.volume)
    assert StructureMatcher().fit(s, c)  # the same crystal, by pymatgen's own test
    assert sorted(c.site_properties["magmom"]) == sorted(s.site_properties["magmom"])
    # GPAW's own cell check no longer warns (it did on the original)
    from ase.cell import Cell
    from gpaw.new.builder import DFTComponentsBuilder

    for cell, warns in ((s, True), (c, False)):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            DFTComponentsBuilder.check_cell(None, Cell(cell.lattice.matrix))
        assert any("Results may be wrong" in str(w.message) for w in got) == warns


def test_cells_gpaw_accepts_are_kept_as_they_are() -> None:
    s = _rhombohedral(60.0)  # fcc primitive: already fine
    assert gpaw_cell(s) is s
