"""The shipped perov_5 band-gap model against predicting 0 eV, on the whole held-out test.csv.

Metrics come from scikit-learn (``mean_absolute_error``, ``precision_score``,
``recall_score``), not from the training code: MAE, and precision / recall of "the gap lies
inside the window" for the paper's windows 0.5 / 1.5 / 2.5 eV ± 0.04 and today's perovskite
benchmark window 1.5 ± 0.3 eV. The all-zero baseline predicts no gap inside any window, so its
recall is 0 and its precision undefined (null). Usage (from the repository root)::

    .venv/bin/python benchmarks/gap_model.py [--model perov5-band-gap-val] [--name gap_model]
        [--threads 1]

Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from _common import ROOT, machine, write_result
from sklearn.metrics import mean_absolute_error, precision_score, recall_score

from smoacs_flows.predictors.alignn import build
from smoacs_flows.predictors.alignn_training import featurise, load_dataset, predict_samples

TEST = ROOT.parent / "shared" / "data" / "perov_5" / "test.csv"
#: (centre, half-width) eV: the paper's three targets ± 0.04, and today's benchmark window
WINDOWS = ((0.5, 0.04), (1.5, 0.04), (2.5, 0.04), (1.5, 0.3))


def window_scores(y: np.ndarray, pred: np.ndarray, lo: float, hi: float) -> dict:
    """Precision and recall (sklearn) of "value in [lo, hi]"; null where undefined."""
    true, hit = (y >= lo) & (y <= hi), (pred >= lo) & (pred <= hi)
    out = {"n_true": int(true.sum()), "n_predicted": int(hit.sum()), "tp": int((true & hit).sum())}
    for key, fn in (("precision", precision_score), ("recall", recall_score)):
        v = float(fn(true, hit, zero_division=np.nan))
        out[key] = None if math.isnan(v) else v
    return out


def window_table(y: np.ndarray, pred: np.ndarray) -> dict:
    """Window scores of ``pred`` and of the all-zero baseline for every window of WINDOWS."""
    zero = np.zeros_like(y)
    out = {}
    for centre, half in WINDOWS:
        lo, hi = round(centre - half, 6), round(centre + half, 6)
        out[f"{centre}+-{half}"] = {
            "range_eV": [lo, hi],
            "model": window_scores(y, pred, lo, hi),
            "all_zero": window_scores(y, zero, lo, hi),
        }
    return out


def main() -> None:
    """Evaluate the model and the all-zero baseline; write and print the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="perov5-band-gap-val",
        help="shipped name or checkpoint dir (default: the val.csv-only model; test.csv is "
        "training data for perov5-band-gap, whose estimate is gap_model_cv.py)",
    )
    ap.add_argument("--name", default="gap_model", help="results file stem")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(TEST, "dir_gap")
    y = np.asarray(data.targets, dtype=float)
    predictor = build(model=args.model, training_elements_only=False)
    model = predictor.model
    pred = predict_samples(model, featurise(data.structures, y, model.config))
    zero = np.zeros_like(y)
    res = {
        "machine": machine(args.threads),
        "model": str(args.model),
        "output_head": model.head,
        "card_created": predictor.card.get("created"),
        "test_file": str(TEST.relative_to(ROOT.parent)),
        "test_sha256": data.sha256,
        "n": int(len(y)),
        "n_gapped": int((y > 0).sum()),
        "prediction_min": float(pred.min()),
        "n_negative": int((pred < 0).sum()),
        "mae": {
            "model": float(mean_absolute_error(y, pred)),
            "all_zero": float(mean_absolute_error(y, zero)),
        },
        "windows": window_table(y, pred),
    }
    path = write_result(args.name, res)
    m = res["mae"]
    print(f"MAE model {m['model']:.4f} eV, all-zero {m['all_zero']:.4f} eV (n={len(y)})")
    print(f"min prediction {res['prediction_min']:.4f} eV, {res['n_negative']} negative")
    for key, w in res["windows"].items():
        s = w["model"]
        print(
            f"window {key} eV: {s['n_true']} true, {s['n_predicted']} predicted, "
            f"precision {s['precision']}, recall {s['recall']}"
        )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
