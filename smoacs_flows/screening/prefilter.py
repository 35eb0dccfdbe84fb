"""Cheap prefilter before any MLIP call: predicted gap, complexity, geometry, neutrality."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure


@dataclass
class PrefilterConfig:
    """Thresholds of the prefilter; ``None`` disables a criterion."""

    band_gap_max: float | None = None  # eV; predicted gap must be ≤ this
    band_gap_key: str | None = None  # record["predicted"] key; default: any "*band_gap" key
    max_elements: int | None = 5
    min_distance: float | None = 0.5  # Å
    neutrality_policy: str | Path | None = "ionic"  # "ionic" | "ionic+metallic" | table path


def structure_problem(s: Structure) -> str | None:
    """A reason the structure is unusable at all (NaN or degenerate lattice/coordinates)."""
    m = np.asarray(s.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(m)):
        return "lattice has NaN/inf entries"
    if not np.all(np.isfinite(s.frac_coords)):
        return "coordinates have NaN/inf entries"
    vol = abs(float(np.linalg.det(m)))
    if vol < 1e-3 * max(float(np.prod(np.linalg.norm(m, axis=1))), 1e-12) or vol < 1e-6:
        return f"degenerate lattice (volume {vol:.3g} Å^3)"
    return None


def min_distance(s: Structure) -> float:
    """Minimum interatomic distance including periodic images (Å)."""
    if len(s) == 1:
        return float(min(s.lattice.abc))
    d = s.distance_matrix.copy()
    np.fill_diagonal(d, np.inf)
    return float(min(d.min(), min(s.lattice.abc)))


def _band_gap(record: dict[str, Any], key: str | None) -> float | None:
    pred = record.get("predicted") or {}
    if key:
        v = pred.get(key)
    else:
        vals = [v for k, v in pred.items() if k.endswith("band_gap")]
        v = min(vals) if vals else None
    return None if v is None else float(v)


def prefilter_one(record: dict[str, Any], structure: Structure, cfg: PrefilterConfig) -> list[str]:
    """Reasons this candidate fails the prefilter (empty list = passes)."""
    why = structure_problem(structure)
    if why:
        return [why]
    reasons = []
    if cfg.band_gap_max is not None:
        gap = _band_gap(record, cfg.band_gap_key)
        if gap is None or not math.isfinite(gap):
            reasons.append("no predicted band gap in the record")
        elif gap > cfg.band_gap_max:
            reasons.append(f"predicted band gap {gap:.3g} eV > {cfg.band_gap_max} eV")
    n_el = len(structure.composition.elements)
    if cfg.max_elements is not None and n_el > cfg.max_elements:
        reasons.append(f"{n_el} elements > {cfg.max_elements}")
    if cfg.min_distance is not None:
        d = min_distance(structure)
        if d < cfg.min_distance:
            reasons.append(f"minimum interatomic distance {d:.3f} Å < {cfg.min_distance} Å")
    if cfg.neutrality_policy is not None:
        from smoacs_flows.smoacs.oxidation import is_charge_neutral

        if not is_charge_neutral(structure.composition, cfg.neutrality_policy):
            why = f"not charge-neutral under policy {cfg.neutrality_policy}"
            if cfg.neutrality_policy != "ionic+metallic" and is_charge_neutral(
                structure.composition, "ionic+metallic"
            ):  # an intermetallic (bcc Fe, Heuslers): say which policy admits it
                why += (
                    " (neutral with metallic oxidation number 0, as an intermetallic: use "
                    "--policy ionic+metallic, or policy: ionic+metallic in a campaign)"
                )
            reasons.append(why)
    return reasons
