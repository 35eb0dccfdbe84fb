"""Structure checks and initial magnetic moments shared by both DFT engines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from smoacs_flows.errors import InputError

#: High-spin initial moments (μB) for magnetic elements: the high-spin moment of the common
#: ion (Mn2+/Fe3+ d5: 5, Co2+ d7: 3, Ni2+ d8: 2, ...; 4f ions by their 4f count). Every other
#: element starts at ``DEFAULT_INITIAL_MOMENT`` so a ferromagnetic start can polarise it.
HIGH_SPIN_MOMENTS: dict[str, float] = {
    "Ti": 2.0,
    "V": 3.0,
    "Cr": 4.0,
    "Mn": 5.0,
    "Fe": 5.0,
    "Co": 3.0,
    "Ni": 2.0,
    "Cu": 1.0,
    "Mo": 3.0,
    "Ru": 3.0,
    "Rh": 2.0,
    "Pd": 1.0,
    "Ce": 5.0,
    "Pr": 5.0,
    "Nd": 5.0,
    "Sm": 5.0,
    "Eu": 7.0,
    "Gd": 7.0,
    "Tb": 7.0,
    "Dy": 7.0,
    "Ho": 7.0,
    "Er": 5.0,
    "Tm": 5.0,
    "Yb": 5.0,
    "U": 5.0,
    "Np": 5.0,
    "Pu": 5.0,
}
DEFAULT_INITIAL_MOMENT = 0.6
#: Atoms closer than this (Å) are overlapping: no DFT code can start from them.
MIN_DISTANCE = 0.5


def initial_moments(
    structure: Structure, overrides: Mapping[str, float] | None = None
) -> list[float]:
    """Ferromagnetic high-spin start: site ``magmom`` properties win, else the element table."""
    table = {**HIGH_SPIN_MOMENTS, **(overrides or {})}
    props = structure.site_properties.get("magmom")
    out = []
    for i, site in enumerate(structure):
        if props is not None and props[i] is not None:
            m = props[i]
            out.append(float(m if np.isscalar(m) else np.asarray(m)[-1]))
        else:
            out.append(float(table.get(site.specie.symbol, DEFAULT_INITIAL_MOMENT)))
    return out


def check_structure(
    structure: Structure, name: str = "structure", min_distance: float = MIN_DISTANCE
) -> None:
    """Refuse structures no DFT code can start from (overlapping atoms, disorder, empty cell)."""
    if len(structure) == 0:
        raise InputError(f"{name}: has no sites")
    from pymatgen.core import DummySpecies

    dummies = sorted({sp.symbol for sp in structure.composition if isinstance(sp, DummySpecies)})
    if dummies:
        raise InputError(
            f"{name}: {', '.join(dummies)} is not a chemical element (a placeholder species)"
        )
    if not structure.is_ordered:
        raise InputError(f"{name}: is disordered (partial occupancies); DFT needs an ordered cell")
    from smoacs_flows.screening.prefilter import structure_problem

    why = structure_problem(structure)  # the check relax and the prefilter make
    if why:
        raise InputError(f"{name}: {why}")
    if len(structure) > 1 or min(structure.lattice.abc) < min_distance:
        dm = structure.distance_matrix.copy()
        np.fill_diagonal(dm, np.inf)
        if len(structure) == 1:
            dmin, i, j = min(structure.lattice.abc), 0, 0
        else:
            i, j = np.unravel_index(np.argmin(dm), dm.shape)
            dmin = float(dm[i, j])
        if dmin < min_distance:
            raise InputError(
                f"{name}: overlapping atoms: sites {i} ({structure[i].specie}) and {j} "
                f"({structure[j].specie}) are {dmin:.3f} Å apart (< {min_distance} Å)"
            )


def read_structure(path: str | Path) -> Structure:
    """Read a CIF/POSCAR/JSON structure; errors name the file."""
    from smoacs_flows.io import check_input_file, warnings_only_on_success

    path = check_input_file(path, "structure file")

    try:
        with warnings_only_on_success():
            structure = Structure.from_file(path)
    except Exception as exc:  # pymatgen raises many kinds on bad files
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path}: cannot read a structure ({why}); expected a CIF, a POSCAR/CONTCAR or "
            "vasprun.xml, or a pymatgen Structure JSON (a campaign YAML goes to submit or run)"
        ) from None
    check_structure(structure, name=str(path))
    return structure
