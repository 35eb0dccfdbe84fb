"""Rank relaxed candidates for DFT by a half-metal campaign's own criteria.

The score (lower is better) combines, on the MLIP-relaxed structure:

* magnetic: ``MAGNETIC_WEIGHT · max(0, m_min − M)``, M = Σ|m_i| per formula unit from CHGNet
  (CHGNet predicts moment *magnitudes*, so M is the sum of site-moment magnitudes, not a net
  moment);
* near-integer moment: ``INTEGER_WEIGHT · |M − round(M)|``;
* few elements: ``ELEMENT_WEIGHT · n_elements``;
* low energy / stability: ``ENERGY_WEIGHT · clip(d, ENERGY_FLOOR, ∞)``, d the signed distance
  (eV/atom) to the screening's hull (``hull_distance``: negative below it; offline the MLIP
  prototype hull, MP phases with a key), else ``e_above_hull``, else the MLIP energy per atom
  when there was no hull.

Energies are clipped from below so that a strongly bound non-magnetic compound (an oxide,
a nitride) cannot outrank a magnetic one on its formation energy alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pymatgen.core import Structure

MAGNETIC_WEIGHT = 2.0
INTEGER_WEIGHT = 1.0
ELEMENT_WEIGHT = 0.05
ENERGY_WEIGHT = 1.0
ENERGY_FLOOR = -0.3
MAGMOM_MIN = 1.0


def chgnet_site_moments(structures: Sequence[Structure], model: Any = None) -> list[list[float]]:
    """CHGNet site-moment magnitudes (μB) of each structure, one batched call."""
    if not structures:
        return []
    from chgnet.model import CHGNet

    model = model or CHGNet.load(verbose=False)
    preds = model.predict_structure(list(structures), task="em", batch_size=32)
    if isinstance(preds, dict):
        preds = [preds]
    return [[abs(float(x)) for x in p["m"]] for p in preds]


def moment_per_fu(rec: dict[str, Any]) -> float | None:
    """Σ|m_i| per formula unit of the relaxed structure (None when not computed)."""
    scr = rec.get("screening") or {}
    site = scr.get("mlip_site_magmoms")
    if site is None:
        return None
    return float(sum(abs(m) for m in site)) / float(rec.get("formula_units") or 1)


def score_parts(rec: dict[str, Any], magmom_min: float = MAGMOM_MIN) -> dict[str, float]:
    """The weighted parts of the half-metal score of one relaxed record."""
    scr = rec.get("screening") or {}
    m = moment_per_fu(rec)
    if m is None:  # no relaxed moment: fall back on the proposal's prediction
        pred = (rec.get("predicted") or {}).get("chgnet.magmom_abs_total")
        m = None if pred is None else float(pred) / float(rec.get("formula_units") or 1)
    e = scr.get("hull_distance", scr.get("e_above_hull"))
    if e is None:
        e = scr.get("mlip_energy_per_atom")
    n_el = rec.get("n_elements") or len(rec.get("elements") or [])
    parts = {
        "magnetic": MAGNETIC_WEIGHT * (magmom_min if m is None else max(0.0, magmom_min - m)),
        "integer": INTEGER_WEIGHT * (0.5 if m is None else abs(m - round(m))),
        "elements": ELEMENT_WEIGHT * float(n_el),
        "energy": ENERGY_WEIGHT * (0.0 if e is None else max(float(e), ENERGY_FLOOR)),
    }
    return parts


def halfmetal_score(rec: dict[str, Any], magmom_min: float = MAGMOM_MIN) -> float:
    """The half-metal ranking score of a relaxed record (lower is better)."""
    v = sum(score_parts(rec, magmom_min).values())
    return v if math.isfinite(v) else math.inf


def rank_halfmetal(records: Sequence[dict[str, Any]], k: int | None = None) -> list[dict]:
    """Records sorted by :func:`halfmetal_score` (best first), the first ``k`` when given."""
    out = sorted(records, key=halfmetal_score)
    return out if k is None else out[:k]
