"""The hurdle head's training pieces: the class weight, the loss, and the gate chosen on the
validation split (by MAE or by F1 of "gapped")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.alignn import AlignnModel
from smoacs_flows.predictors.alignn_network import apply_head

if TYPE_CHECKING:
    from smoacs_flows.predictors.alignn_training import Sample


def resolve_pos_weight(setting: float | str | None, y: np.ndarray) -> float | None:
    """The hurdle's cross-entropy weight of gapped rows: None (unweighted), a number > 0, or
    ``"auto"`` = n_metal / n_gapped of the training targets ``y``."""
    if setting is None:
        return None
    if setting == "auto":
        n_gapped = int((np.asarray(y) > 0).sum())
        if n_gapped == 0:
            raise InputError("pos_weight auto: no gapped (y > 0) rows in the training split")
        return float((len(y) - n_gapped) / n_gapped)
    w = float(setting)
    if not (math.isfinite(w) and w > 0):
        raise InputError(f"pos_weight must be a number > 0 or 'auto', got {setting!r}")
    return w


def hurdle_loss(
    raw: torch.Tensor, y: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Two-part loss of the ``hurdle`` head, both parts averaged over all rows: binary
    cross-entropy of "gapped" (y > 0) on the logit ``raw[:, 0]`` (gapped rows weighted by
    ``pos_weight`` when given), plus the squared error of softplus(``raw[:, 1]``) on the gapped
    rows only (the gap given that there is one; metals add 0), so neither part drowns the other
    when few rows are gapped."""
    gapped = (y > 0).to(y.dtype)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=raw.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(raw[:, 0], gapped, pos_weight=pw)
    gap = torch.nn.functional.softplus(raw[:, 1])
    return bce + torch.mean(gapped * (gap - y) ** 2)


#: gate (sharpness, logit offset) pairs tried on the validation split after training (hurdle)
GATE_GRID = tuple((k, b) for k in (1.0, 2.0, 4.0, 8.0) for b in (0.0, 0.5, 1.0, 1.5, 2.0))


def gate_grid(pos_weight: float | None = None) -> tuple[tuple[float, float], ...]:
    """``GATE_GRID``, plus its offsets shifted by log(pos_weight) when the cross-entropy was
    weighted (a weight w moves the optimal logit up by log w)."""
    if pos_weight is None or pos_weight == 1:
        return GATE_GRID
    shift = math.log(pos_weight)
    return GATE_GRID + tuple((k, round(b + shift, 4)) for k, b in GATE_GRID)


def _tune_gate(
    model: AlignnModel, va: Sequence[Sample], pos_weight: float | None = None, by: str = "mae"
) -> dict[str, Any]:
    """Set the hurdle gate to the best grid (sharpness, offset) on the validation split.

    ``by="mae"``: the lowest MAE (the MAE-optimal prediction is a median: 0 unless P(gapped) is
    high); ``by="f1"``: the best F1 of "gapped" predicted as l > offset (scikit-learn), ties to
    the lower MAE. Ties then go to the gentler gate (smaller offset, then smaller sharpness).
    Returns every grid point's MAE and F1 and the classifier's ROC AUC (threshold-free).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    from smoacs_flows.predictors.alignn_training import mae, predict_samples

    if by not in ("mae", "f1"):
        raise InputError(f"gate selection must be 'mae' or 'f1', got {by!r}")
    y = np.array([s.y for s in va])
    raw = torch.as_tensor(predict_samples(model, va, raw=True))
    logit = raw[:, 0].numpy()
    gapped = y > 0
    grid = gate_grid(pos_weight)
    maes = {kb: mae(apply_head("hurdle", raw, *kb).numpy(), y) for kb in grid}
    f1s = {kb: float(f1_score(gapped, logit > kb[1], zero_division=0.0)) for kb in grid}
    if by == "mae":
        best = min(maes, key=lambda kb: (maes[kb], kb[1], kb[0]))
    else:
        best = min(maes, key=lambda kb: (-f1s[kb], maes[kb], kb[1], kb[0]))
    model.gate = best
    model.config["gate_sharpness"], model.config["gate_bias"] = best
    auc = float(roc_auc_score(gapped, logit)) if 0 < gapped.sum() < len(y) else None
    label = lambda kb: f"k={kb[0]:g},b={kb[1]:g}"  # noqa: E731
    return {
        "mae": {label(kb): v for kb, v in maes.items()},
        "f1": {label(kb): v for kb, v in f1s.items()},
        "auc": auc,
    }
