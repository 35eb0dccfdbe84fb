"""Small campaign builders for engine tests (predictor-free losses keep them fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smoacs_flows.campaign import Campaign, campaign_from_dict

ROOT = Path(__file__).resolve().parents[2]


def perovskite_campaign(**over: Any) -> Campaign:
    """A perovskite campaign whose losses need no predictor."""
    spec: dict[str, Any] = {
        "name": "t",
        "seed": 3,
        "device": "cpu",
        "templates": [{"source": "perovskite", "count": 3, "patterns": [[2, 4, -2], [1, 2, -1]]}],
        "losses": [
            {"term": "tolerance_factor", "target": 0.9},
            {"term": "element_reduction", "weight": 0.1},
            {"term": "volume_per_atom", "target": 12.0, "margin": 1.0, "weight": 0.1},
        ],
        "geometry": {"angles": {"fixed": True}, "coords": {"mode": "bounded", "epsilon": 0.1}},
        "schedule": {"steps": 12, "n_candidates": 8, "batch_size": 8},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    return campaign_from_dict(spec, base_dir=ROOT / "campaigns")
