"""The ALIGNN models shipped with the package: cards, held-out MAE reproduced, size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error

from smoacs_flows.predictors.alignn import SHIPPED_DIR, build, shipped_models
from smoacs_flows.predictors.alignn_training import (
    featurise,
    load_dataset,
    mae,
    predict_samples,
    read_table,
)
from smoacs_flows.predictors.base import SoftCrystalBatch

SHIPPED = {
    "perov5-band-gap": ("dir_gap", "band_gap", "eV"),
    "perov5-formation-energy": ("heat_ref", "formation_energy_per_atom", "eV/atom"),
}
#: models trained on val.csv + test.csv: their held-out figures are K-fold estimates (file)
CV_MODELS = {"perov5-band-gap": "benchmarks/results/gap_model_cv.json"}


def test_both_models_ship_and_stay_small() -> None:
    assert set(SHIPPED) <= set(shipped_models())
    total = sum(f.stat().st_size for name in SHIPPED for f in (SHIPPED_DIR / name).iterdir())
    assert total < 3e6


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_declares_what_the_model_is(name: str) -> None:
    card = json.loads((SHIPPED_DIR / name / "model_card.json").read_text())
    target, prop, units = SHIPPED[name]
    assert (card["target"], card["property"], card["units"]) == (target, prop, units)
    if name in CV_MODELS:  # both perov_5 files; held-out figures from the K-fold estimate
        assert card["dataset"]["path"] == "val.csv+test.csv"
        assert [len(h) for h in card["dataset"]["sha256"].split("+")] == [64, 64]
        assert card["holdout"]["path"] == CV_MODELS[name] and card["holdout"]["n"] == 3787 + 3785
        assert card["split"]["train"] + card["split"]["val"] == 3787 + 3785
        assert card["eval_subset"]["in_training_data"] is True
    else:
        assert card["dataset"]["path"] == "val.csv" and len(card["dataset"]["sha256"]) == 64
        assert card["holdout"]["path"] == "test.csv" and card["holdout"]["n"] == 3785
    assert card["mae"] == card["holdout"]["mae"] > 0
    assert "perovskite" in card["intended_use"] and card["limitations"]
    assert card["training"]["seconds"] > 0 and card["git_revision"]
    pred = build(model=name)
    expected = {prop: units}
    if card["training"].get("output_head") == "hurdle":  # its classifier logit, for `gapped`
        expected["gapped_logit"] = "logit"
    assert pred.properties == expected
    assert 8 in pred.supported_z and pred.supported_z <= set(card["elements_z"])


@pytest.fixture(scope="module")
def held_out(shared_data):
    """perov_5 test.csv parsed once: the dataset and both target columns, row-aligned."""
    path = shared_data / "perov_5" / "test.csv"
    data = load_dataset(path, "heat_ref")
    rows = read_table(path)
    targets = {
        "heat_ref": data.targets,
        "dir_gap": np.array([float(rows[i - 1]["dir_gap"]) for i in data.rows]),
    }
    return data, targets, {}  # the last: featurised samples per graph setting, built once


def _samples(held_out, config: dict) -> list:
    """The held-out structures featurised for ``config``'s graph (shared by models with the
    same cutoffs; predictions do not read the samples' targets)."""
    data, targets, cache = held_out
    key = (config["cutoff"], config.get("three_body_cutoff"), config.get("max_neighbors"))
    if key not in cache:
        cache[key] = featurise(data.structures, targets["heat_ref"], config)
    return cache[key]


def _predictions(held_out, name: str) -> np.ndarray:
    """The shipped model ``name``'s predictions on the whole held-out split (computed once)."""
    cache = held_out[2]
    if ("pred", name) not in cache:
        model = build(model=name).model
        cache[("pred", name)] = predict_samples(model, _samples(held_out, model.config))
    return cache[("pred", name)]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_held_out_mae_is_reproduced(name: str, held_out) -> None:
    """Re-evaluate the whole held-out perov_5 test.csv and compare with the card."""
    card = json.loads((SHIPPED_DIR / name / "model_card.json").read_text())
    data, targets, _ = held_out
    assert data.n_rows == len(data.targets) == 3785  # no row skipped
    y = targets[SHIPPED[name][0]]
    pred = _predictions(held_out, name)
    n = card["eval_subset"]["n"]
    # the shipped weights reproduce the card (for a val+test model these rows are training
    # rows: a reproduction check, not a held-out one; see test_cv_estimate_is_reproduced)
    assert mae(pred[:n], y[:n]) == pytest.approx(card["eval_subset"]["mae"], rel=1e-4)
    assert np.isfinite(pred).all()
    if name in CV_MODELS:
        return
    assert data.sha256 == card["holdout"]["sha256"]
    assert mae(pred, y) == pytest.approx(card["mae"], rel=1e-4)
    if name == "perov5-formation-energy":  # far better than the training median everywhere
        assert card["mae"] < 0.3 * card["holdout"]["baseline_mae_train_median"]
    else:  # the band-gap card's split of the error and its gap-detection scores
        gapped = y > 0
        mae_gapped = mae(pred[gapped], y[gapped])
        assert mae_gapped == pytest.approx(card["holdout"]["mae_gapped"], rel=1e-4)
        true, hit = y > 0.5, pred > 0.5
        det = card["holdout"]["gap_gt_0.5eV"]
        assert (true & hit).sum() / true.sum() == pytest.approx(det["recall"], abs=1e-9)
        assert (true & hit).sum() / hit.sum() == pytest.approx(det["precision"], abs=1e-9)
        assert det["precision"] > 3 * true.mean()  # enriched well above the base rate


#: rows of test.csv (from the top) on which the gap model must beat predicting 0 eV
GAP_SUBSET = 1000


def _gap_subset(held_out) -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions) of the shipped gap model on the first GAP_SUBSET test rows."""
    model = build(model="perov5-band-gap").model
    assert model.config["output_head"] == "hurdle" and model.head == "hurdle"
    _, targets, _ = held_out
    y = targets["dir_gap"][:GAP_SUBSET]
    assert (y > 0).sum() >= 20  # the subset holds gapped rows, so "0 everywhere" is not free
    return y, predict_samples(model, _samples(held_out, model.config)[:GAP_SUBSET])


def test_gap_model_is_non_negative_on_real_rows(held_out) -> None:
    """On real held-out perov_5 rows the shipped gap model never predicts a negative gap."""
    y, pred = _gap_subset(held_out)
    assert pred.shape == y.shape and (pred >= 0).all()


def test_previous_gap_model_beats_predicting_zero(held_out) -> None:
    """The val.csv-only model (kept as perov5-band-gap-val): on the whole held-out test.csv
    (3785 rows, as issue 14 asks) its MAE (scikit-learn's) is below that of the all-zero
    prediction. (On the first GAP_SUBSET rows alone it is not: 0.0717 vs 0.0708 eV.)"""
    y = held_out[1]["dir_gap"]
    pred = _predictions(held_out, "perov5-band-gap-val")
    assert len(y) == 3785 and (y > 0).sum() > 100
    assert mean_absolute_error(y, pred) < mean_absolute_error(y, np.zeros_like(y))


def test_cv_estimate_is_reproduced(shared_data) -> None:
    """The card's held-out figures of the val+test gap model are its K-fold estimate:
    recomputed here with scikit-learn from the pooled out-of-fold predictions, whose targets
    must be perov_5's own dir_gap values, every row exactly once."""
    import gzip

    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    card = json.loads((SHIPPED_DIR / "perov5-band-gap" / "model_card.json").read_text())
    root = Path(__file__).resolve().parents[2]
    path = root / card["holdout"]["path"].replace(".json", "_predictions.csv.gz")
    with gzip.open(path, "rt") as fh:
        rows = list(csv.DictReader(fh))
    truth = {}
    for f in ("val.csv", "test.csv"):
        for r in read_table(shared_data / "perov_5" / f):
            truth[f"{f}:{r['material_id']}"] = float(r["dir_gap"])
    assert sorted(r["id"] for r in rows) == sorted(truth)  # each row held out exactly once
    y = np.array([truth[r["id"]] for r in rows])
    assert np.array_equal(y, [float(r["dir_gap"]) for r in rows])
    pred = np.array([float(r["predicted"]) for r in rows])
    h = card["holdout"]
    assert len({r["fold"] for r in rows}) == 5
    assert mean_absolute_error(y, pred) == pytest.approx(h["mae"], rel=1e-9)
    assert mean_absolute_error(y, 0 * y) == pytest.approx(h["mae_all_zero"], rel=1e-9)
    assert roc_auc_score(y > 0, pred) == pytest.approx(h["gapped_roc_auc"], rel=1e-9)
    assert roc_auc_score(y > 0, pred) > 0.75  # it ranks gapped rows well above metals
    for key, w in h["windows"].items():
        c, half = (float(x) for x in key.split("+-"))
        lo, hi = round(c - half, 6), round(c + half, 6)
        true, hit = (y >= lo) & (y <= hi), (pred >= lo) & (pred <= hi)
        assert recall_score(true, hit) == pytest.approx(w["recall"])
        if hit.any():
            assert precision_score(true, hit) == pytest.approx(w["precision"])


def test_gap_model_is_non_negative_on_soft_crystals(held_out) -> None:
    """Softened element distributions (what SMOACS feeds it) also give gaps >= 0."""
    data, _, _ = held_out
    pred = build(model="perov5-band-gap")
    batch = SoftCrystalBatch.from_structures(data.structures[:16])
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(batch.element_probs.shape, generator=gen)
    probs = torch.softmax(torch.log(batch.element_probs + 1e-3) + 3 * noise, -1)
    soft = SoftCrystalBatch(
        batch.lattice, batch.frac_coords, probs, batch.crystal_index, batch.n_sites
    )
    gaps = pred.predict(soft)["band_gap"]
    assert gaps.shape == (16,) and (gaps >= 0).all()
