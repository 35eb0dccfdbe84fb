"""Tiny campaigns for the orchestration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "campaigns" / "templates"
#: the cheapest meaningful run stages: 3 relaxation steps, one GPAW candidate with a Γ-only SCF
#: and a 2x2x2 non-SCF mesh
CHEAP_STAGES = {
    "screening": {"fmax": 0.3, "steps": 3, "prefilter": {"neutrality_policy": None}},
    "dft": {
        "max_candidates": 1,
        "gpaw": {
            "ecut": 150,
            "kpoint_density": 0.5,
            "dense_kpoint_density": 1.0,
            "min_kpoints": 1,
            "maxiter": 60,
        },
    },
}


def tiny_campaign(
    name: str = "tiny",
    n: int = 2,
    batch: int = 2,
    steps: int = 2,
    stages: dict[str, Any] | None = None,
    template: str = "half_heusler_C1b.cif",
    **extra: Any,
) -> dict[str, Any]:
    """A CHGNet half-metal campaign small enough for a test on 2 shared cores."""
    return {
        "name": name,
        "seed": 3,
        "device": "cpu",
        "templates": [{"source": str(TEMPLATES / template)}],
        "policy": "ionic+metallic",
        "exclude": ["rohs", "rare_earth", "supply_risk", "radioactive"],
        "predictors": {"chgnet": {"type": "chgnet"}},
        "losses": [
            {"term": "energy", "predictor": "chgnet", "weight": 1.0},
            {
                "term": "magmom_min",
                "predictor": "chgnet",
                "property": "magmom_abs_total",
                "minimum": 1.0,
                "weight": 1.0,
            },
        ],
        "geometry": {"coords": {"mode": "bounded", "epsilon": 0.05}, "length_range": [3.0, 8.0]},
        "schedule": {
            "steps": steps,
            "n_candidates": n,
            "batch_size": batch,
            "graph_refresh": {"count": 1},
        },
        "stages": stages
        if stages is not None
        else {
            "screening": {"fmax": 0.2, "steps": 5, "prefilter": {"neutrality_policy": None}},
            "dft": {
                "max_candidates": 1,
                "gpaw": {
                    "ecut": 150,
                    "kpoint_density": 1.0,
                    "dense_kpoint_density": 1.5,
                    "min_kpoints": 2,
                },
            },
        },
        **extra,
    }


def write_campaign(path: Path, data: dict[str, Any]) -> Path:
    """Write a campaign YAML file."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def metallic_channels(result: dict[str, Any], zero: float = 1e-3) -> dict[str, bool]:
    """Per spin: are there states at E_F? Read off the stored DOS (states/eV/cell at E_F,
    interpolated), not from the eigenvalue analysis that decided the verdict."""
    from smoacs_flows.dft.dos import dos_data

    dos, ef = dos_data(result["dos"]), result["efermi"]  # a CompleteDos dict (or older arrays)
    return {s: float(np.interp(ef, dos.energies, getattr(dos, s))) > zero for s in ("up", "down")}


#: how many spin channels have states at E_F for each verdict of a spin-polarised run
METALLIC_CHANNELS = {
    "semiconductor": 0,
    "half_metal": 1,
    "near_half_metal": 2,
    "magnetic_metal": 2,
    "nonmagnetic_metal": 2,
}
