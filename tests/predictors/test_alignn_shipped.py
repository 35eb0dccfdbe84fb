"""The ALIGNN models shipped with the package: cards, held-out MAE reproduced, size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoacs_flows.predictors.alignn import SHIPPED_DIR, build, shipped_models
from smoacs_flows.predictors.alignn_training import featurise, load_dataset, mae, predict_samples

SHIPPED = {
    "perov5-band-gap": ("dir_gap", "band_gap", "eV"),
    "perov5-formation-energy": ("heat_ref", "formation_energy_per_atom", "eV/atom"),
}


def test_both_models_ship_and_stay_small() -> None:
    assert set(SHIPPED) <= set(shipped_models())
    total = sum(f.stat().st_size for name in SHIPPED for f in (SHIPPED_DIR / name).iterdir())
    assert total < 3e6


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_declares_what_the_model_is(name: str) -> None:
    card = json.loads((SHIPPED_DIR / name / "model_card.json").read_text())
    target, prop, units = SHIPPED[name]
    assert (card["target"], card["property"], card["units"]) == (target, prop, units)
    assert card["dataset"]["path"] == "val.csv" and len(card["dataset"]["sha256"]) == 64
    assert card["holdout"]["path"] == "test.csv" and card["holdout"]["n"] == 3785
    assert card["mae"] == card["holdout"]["mae"] > 0
    assert "perovskite" in card["intended_use"] and card["limitations"]
    assert card["training"]["seconds"] > 0 and card["git_revision"]
    pred = build(model=name)
    assert pred.properties == {prop: units}
    assert 8 in pred.supported_z and pred.supported_z <= set(card["elements_z"])


@pytest.fixture(scope="module")
def test_set(shared_data):
    return shared_data / "perov_5" / "test.csv"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_held_out_mae_is_reproduced(name: str, test_set, shared_data) -> None:
    """Re-evaluate the whole held-out perov_5 test.csv and compare with the card."""
    card = json.loads((SHIPPED_DIR / name / "model_card.json").read_text())
    data = load_dataset(test_set, SHIPPED[name][0])
    assert data.sha256 == card["holdout"]["sha256"]
    model = build(model=name).model
    pred = predict_samples(model, featurise(data.structures, data.targets, model.config))
    assert mae(pred, data.targets) == pytest.approx(card["mae"], rel=1e-4)
    n = card["eval_subset"]["n"]
    assert mae(pred[:n], data.targets[:n]) == pytest.approx(card["eval_subset"]["mae"], rel=1e-4)
    # better than predicting the training median everywhere
    assert card["mae"] < card["holdout"]["baseline_mae_train_median"]
    assert np.isfinite(pred).all()
