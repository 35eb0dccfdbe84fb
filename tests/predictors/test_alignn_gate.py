"""The ALIGNN spec option ``gate``: an optimisation-only hurdle gate for the band-gap model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from pymatgen.core import Structure

from smoacs_flows.cli import main
from smoacs_flows.errors import InputError
from smoacs_flows.predictors.alignn import SHIPPED_DIR, build, predict_structures
from smoacs_flows.predictors.alignn_training import load_dataset
from smoacs_flows.predictors.base import SoftCrystalBatch, build_predictor

#: the val.csv-only model, so test.csv rows are held out (the current one trains on them)
MODEL = "perov5-band-gap-val"


@pytest.fixture(scope="module")
def metals(shared_data):
    """The first 6 held-out metals (dir_gap = 0) of perov_5 test.csv."""
    data = load_dataset(shared_data / "perov_5" / "test.csv", "dir_gap", limit=40)
    idx = np.flatnonzero(np.asarray(data.targets) == 0)[:6]
    assert len(idx) == 6
    return [data.structures[i] for i in idx]


def _reference(raw: np.ndarray, k: float, b: float) -> np.ndarray:
    """sigmoid(k (l - b)) * softplus(g) from the raw (l, g) pairs, in float64 numpy."""
    l, g = raw[:, 0].astype(np.float64), raw[:, 1].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-k * (l - b))) * np.logaddexp(0.0, g)


def _gap_and_grad(predictor, structures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, raw (l, g), per-crystal max |d gap / d element probability|) - the
    measurement of benchmarks/gap_gradient.py."""
    batch = SoftCrystalBatch.from_structures(structures)
    probs = batch.element_probs.clone().requires_grad_(True)
    soft = SoftCrystalBatch(
        batch.lattice, batch.frac_coords, probs, batch.crystal_index, batch.n_sites
    )
    gap = predictor.predict(soft)["band_gap"]
    raw = predictor.model.raw(soft, predictor._graph).detach().numpy()
    gap.sum().backward()
    per_site = probs.grad.abs().amax(-1).numpy()
    site_crystal = batch.crystal_index.numpy()
    per_crystal = np.array([per_site[site_crystal == i].max() for i in range(len(structures))])
    return gap.detach().numpy(), raw, per_crystal


@pytest.fixture(scope="module")
def shipped(metals):
    """The shipped gate's (predictions, raw outputs, gradients) on ``metals``, once."""
    default = build(model=MODEL)
    assert default.gate is None
    return _gap_and_grad(default, metals)


@pytest.mark.parametrize(("k", "b"), [(1.0, 0.0), (3.0, -0.5)])
def test_override_is_the_gate_formula_on_the_raw_outputs(metals, shipped, k, b) -> None:
    pred = build_predictor({"type": "alignn", "model": MODEL, "gate": {"sharpness": k, "bias": b}})
    gap, raw, _ = _gap_and_grad(pred, metals)
    assert raw.shape == (len(metals), 2)
    np.testing.assert_allclose(gap, _reference(raw, k, b), rtol=2e-5, atol=1e-30)
    # the default follows the shipped config.json's own gate (no behaviour change)
    cfg = json.loads((SHIPPED_DIR / MODEL / "config.json").read_text())
    gap0, raw0, _ = shipped
    np.testing.assert_allclose(raw0, raw, rtol=1e-6)
    ref0 = _reference(raw0, cfg["gate_sharpness"], cfg["gate_bias"])
    np.testing.assert_allclose(gap0, ref0, rtol=2e-5, atol=1e-30)


def test_soft_gate_gives_a_gradient_where_the_shipped_gate_has_none(metals, shipped) -> None:
    shipped = shipped[2]
    soft_pred = build(model=MODEL, gate={"sharpness": 1, "bias": 0})
    _, _, soft = _gap_and_grad(soft_pred, metals)
    flat = shipped < 1e-12
    assert flat.sum() >= 4, shipped  # the sharp gate is shut on these metals
    assert (soft[flat] > 1e-6).all(), soft
    assert np.median(soft) > 1e6 * max(np.median(shipped), 1e-30)


@pytest.mark.parametrize(
    ("gate", "needle"),
    [
        ({"sharpness": 0, "bias": 0}, "gate.sharpness"),
        ({"sharpness": -1, "bias": 0}, "gate.sharpness"),
        ({"sharpness": float("nan"), "bias": 0}, "gate.sharpness"),
        ({"sharpness": True, "bias": 0}, "gate.sharpness"),
        ({"sharpness": 1, "bias": "0"}, "gate.bias"),
        ({"sharpness": 1, "bias": 5e3}, "gate.bias"),
        ({"sharpness": 1}, "gate.bias"),
        ({"sharpness": 1, "bias": 0, "k": 2}, "'k'"),
        ([1, 0], "gate must be"),
    ],
)
def test_bad_override_is_one_input_error(gate, needle) -> None:
    with pytest.raises(InputError) as exc:
        build(model=MODEL, gate=gate)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_override_on_a_model_without_gate_is_refused() -> None:
    with pytest.raises(InputError, match="gate needs a 'hurdle' model"):
        build(model="perov5-formation-energy", gate={"sharpness": 1, "bias": 0})


def _campaign(gate: dict | None) -> dict:
    gap = {"type": "alignn", "model": MODEL}
    if gate is not None:
        gap["gate"] = gate
    return {
        "name": "gate-test",
        "device": "cpu",
        "templates": [{"source": "perovskite", "count": 3, "patterns": [[2, 4, -2]]}],
        "predictors": {"gap": gap},
        "losses": [{"term": "band_gap_hinge", "predictor": "gap", "target": 1.5, "margin": 0.3}],
        "geometry": {"angles": {"fixed": True}, "coords": {"mode": "bounded", "epsilon": 0.1}},
        "schedule": {"steps": 3, "n_candidates": 3, "batch_size": 3},
    }


def test_propose_scores_with_the_shipped_gate_and_records_the_override(tmp_path, capsys) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_campaign({"sharpness": 1, "bias": 0})))
    out = tmp_path / "out"
    assert main(["propose", str(good), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["campaign_spec"]["predictors"]["gap"]["gate"] == {"sharpness": 1, "bias": 0}
    recs = [json.loads(line) for line in (out / "proposals.jsonl").read_text().splitlines()]
    assert len(recs) == 3
    got = np.array([r["predicted"]["gap.band_gap"] for r in recs])
    structures = [Structure.from_dict(r["structure"]) for r in recs]
    with torch.no_grad():
        shipped = predict_structures(build(model=MODEL), structures)
        soft = predict_structures(build(model=MODEL, gate={"sharpness": 1, "bias": 0}), structures)
    # the records carry the shipped gate's predictions, not the optimisation gate's
    np.testing.assert_allclose(got, shipped, rtol=1e-4, atol=1e-30)
    assert not np.allclose(got, soft, rtol=1e-2)


def test_propose_refuses_a_bad_gate_and_writes_nothing(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_campaign({"sharpness": -2, "bias": 0})))
    out = tmp_path / "out"
    assert main(["propose", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "gate.sharpness" in err and err.count("\n") == 1
    assert not out.exists()
