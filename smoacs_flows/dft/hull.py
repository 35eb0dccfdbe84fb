"""DFT energy above the convex hull (VASP path only).

A VASP PBE(+U) result becomes a ``ComputedStructureEntry`` with the run type and U values from
its INCAR, gets MP2020 corrections, and is placed on a phase diagram of MP2020-corrected
reference entries (Materials Project + Alexandria, from the screening reference store when it
has the chemical system). GPAW energies have another reference and are reported as
"not comparable to MP" instead of a wrong number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.io.vasp import Poscar

from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.errors import InputError


def vasp_entry(result: DFTResult) -> ComputedStructureEntry:
    """The result as an MP-style entry (run type, Hubbard U from the INCAR)."""
    if result.engine != "vasp" or result.energy is None:
        raise InputError(f"{result.reduced_formula}: only VASP energies can enter an MP hull")
    structure = Structure.from_dict(result.structure)
    # the INCAR of the run whose energy this is (the chain's static, not its non-SCF DOS run)
    incar = (
        (result.settings.get("energy_from") or {}).get("incar")
        or result.settings.get("incar")
        or {}
    )
    hubbards: dict[str, float] = {}
    if incar.get("LDAU"):
        symbols = Poscar(structure).site_symbols
        u = incar.get("LDAUU") or []
        if len(u) != len(symbols):
            raise InputError(f"{result.reduced_formula}: LDAUU does not match the species")
        hubbards = {s: float(v) for s, v in zip(symbols, u)}
    is_u = any(v > 0 for v in hubbards.values())
    metagga = str(incar.get("METAGGA") or "").strip().lower()
    if metagga and metagga not in ("--", "none"):
        run_type = metagga.upper()  # r2SCAN etc.: MP2020 (GGA/GGA+U) rejects it
    else:
        run_type = "GGA+U" if is_u else "GGA"
    params = {"run_type": run_type, "is_hubbard": is_u, "hubbards": hubbards}
    return ComputedStructureEntry(
        structure, result.energy, parameters=params, entry_id=f"dft-{result.reduced_formula}"
    )


def dft_hull(
    result: DFTResult, reference_entries: Sequence[ComputedEntry] | None = None
) -> dict[str, Any]:
    """``{"comparable_to_mp", "e_above_hull" (eV/atom), "n_references", "note"}``.

    Reference entries must already carry MP2020 corrections. Without them, the reference
    store of the screening stage is used when it holds the chemical system.
    """
    if result.engine != "vasp":
        from smoacs_flows.dft.gpaw_engine import GPAW_HULL_NOTE

        return {
            "comparable_to_mp": False,
            "e_above_hull": None,
            "n_references": 0,
            "note": GPAW_HULL_NOTE,
        }
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from smoacs_flows.screening.references import apply_mp2020

    try:
        entry = apply_mp2020([vasp_entry(result)], where=f"{result.reduced_formula}: ")[0]
    except InputError as exc:  # e.g. r2SCAN runs, or U values other than MP's
        return {
            "comparable_to_mp": False,
            "e_above_hull": None,
            "n_references": 0,
            "note": str(exc),
        }
    chemsys = "-".join(sorted(el.symbol for el in entry.composition.elements))
    if reference_entries is None:
        from smoacs_flows.screening.references import ReferenceStore

        with ReferenceStore() as store:
            reference_entries = store.get(chemsys)
    elements = {el.symbol for el in entry.composition.elements}
    refs = [
        e for e in reference_entries if {el.symbol for el in e.composition.elements} <= elements
    ]
    have = {el.symbol for e in refs for el in e.composition.elements if e.composition.is_element}
    if not elements <= have:
        return {
            "comparable_to_mp": True,
            "e_above_hull": None,
            "n_references": len(refs),
            "note": f"no elemental references for {sorted(elements - have)} in {chemsys}; "
            "fetch them with the screening reference store",
        }
    pd = PhaseDiagram([*refs, entry])
    return {
        "comparable_to_mp": True,
        "e_above_hull": float(pd.get_e_above_hull(entry, allow_negative=True)),
        "n_references": len(refs),
        "note": "VASP energy with MP2020 corrections against MP2020-corrected references",
    }
