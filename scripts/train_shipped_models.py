"""Regenerate the ALIGNN models that ship with smoacs-flows (perov_5 band gap, formation energy).

Usage (from the repository root; the shared data lie in ../shared/data)::

    .venv/bin/python scripts/train_shipped_models.py [--only perov5-band-gap] [--threads 1]

Each model trains on perov_5 ``val.csv`` (seeded 90/10 split into train / early-stopping
validation) and is evaluated on the whole of perov_5 ``test.csv`` (held out, never seen in
training). The card also records the MAE on the first ``EVAL_SUBSET`` rows of ``test.csv``, the
subset the test suite re-evaluates. Results go to ``smoacs_flows/data/models/<name>/``
atomically. Fixed epochs, seed and thread count make a rerun reproduce the weights on the same
machine type (float summation order may differ across CPUs/thread counts).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smoacs_flows.predictors.alignn_dataset import Dataset  # noqa: E402
from smoacs_flows.predictors.alignn_training import (  # noqa: E402
    DEFAULT_MODEL,
    TrainSettings,
    featurise,
    load_dataset,
    mae,
    predict_samples,
    train,
    write_model,
)

DATA = ROOT.parent / "shared" / "data" / "perov_5"
OUT = ROOT / "smoacs_flows" / "data" / "models"
#: rows of test.csv (from the top, in file order) that the test suite re-evaluates
EVAL_SUBSET = 1000

SCOPE = (
    "Cubic ABX3 perovskites in 5-atom cells (the perov_5 / Castelli et al. 2012 chemical space: "
    "A, B from ~50 metals, X3 from O, N, F, S and mixtures). Trained on {n} structures."
)
MODELS = {
    "perov5-band-gap": {
        "target": "dir_gap",
        "property": "band_gap",
        "units": "eV",
        # two-part (hurdle) head: P(gapped) x softplus(gap), trained by BCE on "gapped" plus
        # MSE on the gapped rows; >= 0 by construction. (A plain MSE run had held-out MAE
        # 0.153 vs 0.089 for predicting 0, and negative gaps; L1 predicted ~0 everywhere.)
        "loss": "mse",
        "head": "hurdle",
        # gapped rows weighted 5x in the cross-entropy ("auto" = n_metal / n_gapped = 23.9
        # shut the gate: held-out MAE 0.0888 = all-zero, recall 0; see notes)
        "pos_weight": 5.0,
        # the gate (sharpness, offset) with the best validation F1 of "gapped": the MAE-optimal
        # gate predicts ~0 for nearly every row of a 4 %-gapped set (issue 20)
        "gate_by": "f1",
        # both perov_5 files (issue 20); the held-out estimate is benchmarks/gap_model_cv.py's
        # stratified 5-fold cross validation with these same settings
        "data": ("val.csv", "test.csv"),
        "test_frac": 0.0,
        "cv": "benchmarks/results/gap_model_cv.json",
        "epochs": 30,  # ~12-18 min on one CPU thread (2026-11-26 load)
        "good_for": (
            "Ranking/screening perovskite compositions by GLLB-SC direct gap and steering SMOACS "
            "toward gapped ABX3 compositions within the training range (0-7.3 eV)."
        ),
        "not_for": (
            "Quantitative gaps: 96% of the training labels are exactly 0 (metals); the "
            "prediction is P(gapped) x gap, so an uncertain compound gets a gap shrunk toward 0 "
            "(compare holdout.mae_gapped and holdout.mae_metals, and benchmarks/results/"
            "gap_model.json for the gap-window precision/recall). GLLB-SC gaps are not "
            "PBE/HSE/experimental gaps. Not for non-perovskite structures, distorted/tilted "
            "cells, supercells far from the cubic 5-atom geometry, or elements outside "
            "elements_z. Predictions are >= 0 by construction (output_head 'hurdle')."
        ),
        "notes": [
            "Cross-entropy of gapped rows weighted 5x (pos_weight 5; training.pos_weight). "
            "Replaces the unweighted hurdle model (same data, seed, 30 epochs): held-out MAE "
            "0.0891 eV vs 0.0888 all-zero, 10 predictions > 0.5 eV (6 right); its window "
            "scores are in benchmarks/results/gap_model_prev_hurdle.json.",
            "A run with pos_weight auto (n_metal / n_gapped = 23.9 on the training split) got "
            "a gate (k 8, b 5.17) chosen on validation by MAE that shuts it: held-out MAE "
            "0.0888 eV (= all-zero), no gap predicted; benchmarks/results/"
            "gap_model_posweight_auto.json. The two weights were compared on validation MAE "
            "too (best gate: 0.0291 for w 5, 0.0361 for auto), which picks the same run.",
            "Before that, the plain MSE model (identity output, 24 epochs, best "
            "validation RMSE): held-out MAE 0.153 eV vs 0.089 for predicting 0, 1678 of 3785 "
            "held-out predictions negative (min -0.51 eV); its window scores are in "
            "benchmarks/results/gap_model_old_mse.json.",
            "A second run (same loss as now, 18 epochs, gate sharpness tuned, no offset) "
            "reached held-out MAE 0.0919 eV vs 0.0888 all-zero; P(gapped) averaged 0.22 on "
            "gapped rows, 0.026 on metals.",
            "A first hurdle run with the gap error averaged over the gapped rows only (so it "
            "outweighed the cross-entropy ~50x) and the plain gate sigmoid(l) reached held-out "
            "MAE 0.140 eV (P(gapped) averaged 0.11 on gapped rows, 0.035 on metals); the loss "
            "now averages both parts over all rows and the gate sharpness is tuned on the "
            "validation split.",
            "Earlier runs not shipped (same data, seed, architecture): MSE with early stopping "
            "on validation MAE -> held-out MAE 0.152 eV; L1 loss -> ~0 eV everywhere "
            "(held-out MAE 0.0900 vs 0.0888 all-zero, recall 0).",
        ],
    },
    "perov5-formation-energy": {
        "target": "heat_ref",
        "property": "formation_energy_per_atom",
        "units": "eV/atom",
        "loss": "mse",
        "good_for": (
            "Relative stability (heat of formation vs. Castelli's elemental references, eV/atom) "
            "of cubic ABX3 perovskite compositions; a differentiable SMOACS objective term."
        ),
        "not_for": (
            "Absolute formation energies comparable with Materials Project (different reference "
            "energies and functional: Castelli's RPBE-based heat_ref), energies above hull, "
            "non-perovskite structures or elements outside elements_z."
        ),
    },
}


def combined(target: str, files: tuple[str, ...]) -> Dataset:
    """Several perov_5 files as one dataset (ids prefixed by their file)."""
    parts = [load_dataset(DATA / f, target, warn=print) for f in files]
    if len(parts) == 1:
        return parts[0]
    return Dataset(
        path="+".join(files),
        sha256="+".join(p.sha256 for p in parts),
        n_rows=sum(p.n_rows for p in parts),
        ids=[f"{f}:{i}" for f, p in zip(files, parts, strict=True) for i in p.ids],
        rows=[r for p in parts for r in p.rows],
        structures=[s for p in parts for s in p.structures],
        targets=np.concatenate([p.targets for p in parts]),
    )


def cv_holdout(path: Path, settings: TrainSettings) -> dict:
    """The card's held-out section from the K-fold JSON (its settings must be these)."""
    import json

    cv = json.loads(path.read_text())
    for key, val in cv["settings"].items():
        if key != "test_frac" and getattr(settings, key, val) != val:
            raise SystemExit(
                f"{path}: ran with {key}={val!r}, the model trains with "
                f"{getattr(settings, key)!r}; rerun benchmarks/gap_model_cv.py"
            )
    return {
        "source": f"stratified {cv['k']}-fold cross validation on the training data, the "
        f"same settings; pooled out-of-fold predictions ({path.relative_to(ROOT)})",
        "n": cv["n"],
        "n_gapped": cv["n_gapped"],
        "mae": cv["mae"]["model"],
        "mae_all_zero": cv["mae"]["all_zero"],
        "mae_gapped": cv["mae"]["model_gapped_rows"],
        "mae_metals": cv["mae"]["model_metal_rows"],
        "gapped_f1": cv["gapped_classification"]["f1"],
        "gapped_roc_auc": cv["gapped_classification"]["roc_auc_of_predicted_gap"],
        "windows": {k: w["model"] for k, w in cv["windows"].items()},
        "path": str(path.relative_to(ROOT)),
    }


def evaluation(y: np.ndarray, pred: np.ndarray, test, model, card: dict) -> dict:
    """Held-out metrics beyond the MAE, and the MAE on the fixed subset the tests re-check."""
    base = ("n", "mae", "baseline_mae_train_median", "target_mean", "sha256", "path")
    holdout = {k: card["holdout"][k] for k in base if k in card["holdout"]}
    if card["property"] == "band_gap":  # 96% metals: split the error, and score "is gapped"
        gapped = y > 0
        holdout["n_gapped"] = int(gapped.sum())
        holdout["mae_gapped"] = mae(pred[gapped], y[gapped]) if gapped.any() else None
        holdout["mae_metals"] = mae(pred[~gapped], y[~gapped]) if (~gapped).any() else None
        holdout["n_negative"] = int((pred < 0).sum())
        holdout["mae_all_zero"] = mae(np.zeros_like(y), y)
        true, hit = y > 0.5, pred > 0.5
        holdout["gap_gt_0.5eV"] = {
            "n": int(true.sum()),
            "recall": float((true & hit).sum() / max(true.sum(), 1)),
            "precision": float((true & hit).sum() / max(hit.sum(), 1)),
        }
    return {"holdout": holdout, "eval_subset": subset_mae(test, model)}


def subset_mae(test, model, in_training: bool = False) -> dict:
    """The MAE on the first ``EVAL_SUBSET`` rows of test.csv, the subset the tests re-check
    (``in_training``: those rows are training data, so it is a reproduction check only)."""
    n_sub = min(EVAL_SUBSET, len(test.targets))
    sub = featurise(test.structures[:n_sub], test.targets[:n_sub], model.config)
    out = {
        "file": "test.csv",
        "rows": f"first {n_sub} data rows",
        "n": n_sub,
        "mae": mae(predict_samples(model, sub), test.targets[:n_sub]),
    }
    return {**out, "in_training_data": True} if in_training else out


def _descriptions(name: str, card: dict) -> dict:
    """The card's free-text fields from ``MODELS`` (rewritten by --reevaluate too)."""
    spec = MODELS[name]
    return {
        "intended_use": SCOPE.format(n=card["split"]["train"]) + " " + spec["good_for"],
        "limitations": spec["not_for"],
        "training_data": f"perov_5 {' + '.join(spec.get('data', ('val.csv',)))} (CDVAE split of "
        "Castelli et al. 2012), MIT",
        "regenerate": f"python scripts/train_shipped_models.py --only {name}",
        **({"notes": spec["notes"]} if "notes" in spec else {}),
    }


def shipped_settings(
    name: str,
    epochs: int | None = None,
    loss: str | None = None,
    pos_weight: float | str | None = None,
) -> TrainSettings:
    """The training settings of a shipped model (overrides: ``--epochs/--loss/--pos-weight``)."""
    spec = MODELS[name]
    return TrainSettings(
        epochs=epochs or spec.get("epochs", 24),
        patience=12,
        batch_size=64,
        learning_rate=2e-3,
        loss=loss or spec["loss"],
        head=spec.get("head", "identity"),
        pos_weight=pos_weight if pos_weight is not None else spec.get("pos_weight"),
        gate_by=spec.get("gate_by", "mae"),
        seed=0,
        val_frac=0.1,
        test_frac=spec.get("test_frac", 0.1),
        cutoff=5.0,
        three_body_cutoff=3.0,
        max_neighbors=None,
        model={**DEFAULT_MODEL, "hidden_features": 48, "embedding_features": 32},
    )


def reevaluate(name: str, out: Path) -> None:
    """Recompute the held-out metrics of an already trained model and rewrite its card."""
    import json

    from smoacs_flows.io import atomic_write_bytes
    from smoacs_flows.predictors.alignn import build

    card_path = out / name / "model_card.json"
    card = json.loads(card_path.read_text())
    test = load_dataset(DATA / "test.csv", card["target"], warn=print)
    model = build(model=out / name, training_elements_only=False).model
    if "test.csv" in MODELS[name].get("data", ()):  # test.csv is training data: keep the CV
        card["eval_subset"] = subset_mae(test, model, in_training=True)
    else:
        pred = predict_samples(model, featurise(test.structures, test.targets, model.config))
        card["mae"] = mae(pred, test.targets)
        card["holdout"]["mae"] = card["mae"]
        card.update(evaluation(test.targets, pred, test, model, card))
    card.update(_descriptions(name, card))
    atomic_write_bytes(card_path, (json.dumps(card, indent=1) + "\n").encode())
    print(f"{name}: held-out MAE {card['mae']:.4f}; subset {card['eval_subset']['mae']:.4f}")


def _pos_weight(text: str) -> float | str:
    """``--pos-weight``: 'auto' or a number > 0."""
    if text == "auto":
        return text
    try:
        w = float(text)
    except ValueError:
        w = float("nan")
    if not (np.isfinite(w) and w > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'auto', got {text!r}")
    return w


def main(argv: list[str] | None = None) -> int:
    """Train the selected shipped models and write them with their cards."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(MODELS), action="append")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="default: the model's own")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--loss", choices=["mse", "l1"], default=None, help="override the loss")
    p.add_argument(
        "--pos-weight",
        type=_pos_weight,
        default=None,
        help="hurdle head: cross-entropy weight of gapped rows, a number > 0 or 'auto' "
        "(n_metal / n_gapped of the training split); default: the model's own (unweighted)",
    )
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="only recompute the held-out metrics of the models in --out",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.only or sorted(MODELS):
        if args.reevaluate:
            reevaluate(name, args.out)
            continue
        spec = MODELS[name]
        t0 = time.time()
        files = spec.get("data", ("val.csv",))
        data = combined(spec["target"], files)
        test = load_dataset(DATA / "test.csv", spec["target"], warn=print)
        in_training = "test.csv" in files
        settings = shipped_settings(name, args.epochs, args.loss, args.pos_weight)
        result = train(
            data,
            spec["target"],
            settings,
            test_data=None if in_training else test,
            property_name=spec["property"],
            units=spec["units"],
            name=name,
            log=print,
        )
        card = result.card
        if in_training:  # no file left out: the K-fold estimate is the held-out section
            card["holdout"] = cv_holdout(ROOT / spec["cv"], settings)
            card["mae"] = card["holdout"]["mae"]
            card["split"]["holdout_source"] = card["holdout"]["source"]
            card["eval_subset"] = subset_mae(test, result.model, in_training=True)
        else:
            card.update(
                evaluation(
                    result.holdout_targets, result.holdout_predictions, test, result.model, card
                )
            )
        card.update(_descriptions(name, card))
        write_model(args.out / name, result, force=True)
        size = sum(f.stat().st_size for f in (args.out / name).iterdir())
        base = card["holdout"].get("baseline_mae_train_median", card["holdout"].get("mae_all_zero"))
        print(
            f"{name}: held-out MAE {card['mae']:.4f} {spec['units']} on {card['holdout']['n']} "
            f"(baseline {base:.4f}); "
            f"subset MAE {card['eval_subset']['mae']:.4f}; {size / 1e6:.2f} MB; "
            f"{time.time() - t0:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
