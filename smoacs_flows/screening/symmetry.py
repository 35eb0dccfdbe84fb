"""Symmetry before and after relaxation: space groups and whether the prototype was kept."""

from __future__ import annotations

from typing import Any

from pymatgen.core import Structure

#: spglib tolerance (Å) for the space groups of proposals and relaxed cells: proposals come
#: out of a continuous optimisation, so a loose one finds the prototype they approximate
SYMPREC = 0.1


def spacegroup(structure: Structure, symprec: float = SYMPREC) -> dict[str, Any] | None:
    """``{"number", "symbol"}`` of ``structure`` (spglib via pymatgen), None if spglib fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        return {"number": int(sga.get_space_group_number()), "symbol": sga.get_space_group_symbol()}
    except Exception:  # noqa: BLE001 - spglib refuses some distorted cells
        return None


def relaxation_change(initial: Structure, relaxed: Structure) -> dict[str, Any]:
    """Space group before and after relaxation, and whether the relaxed crystal is still the
    proposed one (pymatgen's ``StructureMatcher`` with its default tolerances)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    try:
        kept = bool(StructureMatcher().fit(initial, relaxed))
    except Exception:  # noqa: BLE001 - matcher failures leave it unknown
        kept = None
    return {
        "spacegroup_initial": spacegroup(initial),
        "spacegroup_relaxed": spacegroup(relaxed),
        "prototype_kept": kept,
    }
