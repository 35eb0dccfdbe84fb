"""The real FeO VASP outputs as one S.U.N.-stage output, for tests that run the DFT stage alone
(importable by worker processes: tests.dft._feo)."""

from __future__ import annotations

from pathlib import Path

from jobflow import job
from pymatgen.core import Structure


@job
def sun_standin(out: dict) -> dict:
    """The S.U.N. stage's output (upstream stages are not under test)."""
    return out


def feo_sun_output(feo: Path, cid: str, e_above_hull: float) -> dict:
    """A S.U.N. output holding one FeO candidate ``cid`` built from ``feo/POSCAR.gz``."""
    s = Structure.from_file(feo / "POSCAR.gz")
    rec = {
        "id": cid,
        "reduced_formula": "FeO",
        "formula": s.composition.formula,
        "elements": ["Fe", "O"],
        "structure": s.as_dict(),
        "screening": {"mlip_energy_per_atom": -6.0, "e_above_hull": e_above_hull},
    }
    return {
        "records": [rec],
        "counts": {"proposed": 1, "prefiltered": 1, "relaxed": 1, "sun": 1},
        "notes": [],
    }
