"""`smoacs-flows train` and ALIGNN checkpoints: round trip, layouts, bad checkpoints, bad data."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from smoacs_flows.cli import main
from smoacs_flows.errors import InputError
from smoacs_flows.predictors.alignn import build, predict_structures, read_checkpoint
from smoacs_flows.predictors.alignn_training import (
    hurdle_loss,
    load_dataset,
    parse_structure,
    resolve_pos_weight,
)

TINY_ARGS = [
    "--hidden",
    "16",
    "--alignn-layers",
    "1",
    "--gcn-layers",
    "1",
    "--three-body-cutoff",
    "3.0",
    "--batch-size",
    "16",
    "--quiet",
]


def _subset_csv(shared: Path, out: Path, n: int, bad_rows: dict[int, dict] | None = None) -> Path:
    """The first ``n`` rows of perov_5 val.csv, with some fields replaced."""
    with open(shared / "perov_5" / "val.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for _, r in zip(range(n), reader)]
        fields = reader.fieldnames
    for i, patch in (bad_rows or {}).items():
        rows[i - 1].update(patch)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data) -> Path:
    """A tiny model trained by the CLI on 60 perov_5 structures (2 epochs)."""
    tmp = tmp_path_factory.mktemp("train")
    data = _subset_csv(shared_data, tmp / "data.csv", 60)
    out = tmp / "model"
    rc = main(
        [
            "train",
            str(data),
            "--target",
            "heat_ref",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--test-frac",
            "0.25",
            "--seed",
            "7",
            *TINY_ARGS,
        ]
    )
    assert rc == 0
    return out


def test_train_writes_alignn_layout_and_card(trained: Path) -> None:
    assert {p.name for p in trained.iterdir()} == {
        "config.json",
        "best_model.pt",
        "model_card.json",
        "holdout_predictions.csv",
    }
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["name"] == "alignn_atomwise_pure" and config["target"] == "heat_ref"
    card = json.loads((trained / "model_card.json").read_text())
    assert card["property"] == "formation_energy_per_atom" and card["units"] == "eV/atom"
    assert len(card["dataset"]["sha256"]) == 64 and card["dataset"]["rows"] == 60
    assert card["split"] == {
        "seed": 7,
        "train": 39,
        "val": 6,
        "holdout": 15,
        "holdout_source": "random 25% of the dataset",
    }
    assert card["training"]["epochs_run"] == 2 and card["training"]["seconds"] > 0
    # the commit of the checkout that trained (git itself says which), "+dirty" if modified
    here = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True)
    assert head.returncode == 0, "the tests run from a git checkout"
    assert card["git_revision"].removesuffix("+dirty") == head.stdout.decode().strip()
    rows = _read_csv(trained / "holdout_predictions.csv")
    mae = np.mean([abs(float(r["target"]) - float(r["prediction"])) for r in rows])
    assert card["mae"] == pytest.approx(mae, abs=1e-12)


def _holdout_structures(trained: Path, shared_data: Path):
    rows = _read_csv(trained / "holdout_predictions.csv")
    by_id = {}
    with open(shared_data / "perov_5" / "val.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            by_id[r["material_id"]] = r["cif"]
    structs = [parse_structure(by_id[r["id"]]) for r in rows]
    return structs, np.array([float(r["prediction"]) for r in rows])


def test_checkpoint_reproduces_training_predictions_exactly(trained, shared_data) -> None:
    structs, expected = _holdout_structures(trained, shared_data)
    pred = build(model=trained)
    got = np.array(predict_structures(pred, structs, batch_size=256))
    assert np.array_equal(got, expected), np.abs(got - expected).max()


def test_old_checkpoints_keep_the_identity_head(trained) -> None:
    """A config without ``output_head`` (alignn's own, and ours before the key) is raw output."""
    assert "output_head" not in json.loads((trained / "config.json").read_text())
    assert build(model=trained).model.head == "identity"


def test_hurdle_head_trains_reloads_and_is_non_negative(shared_data, tmp_path) -> None:
    """The two-part gap head: declared in config.json, two outputs, reloaded to the same
    predictions, never negative (perov_5 gaps: most rows exactly 0)."""
    data = _subset_csv(shared_data, tmp_path / "d.csv", 60)
    out = tmp_path / "m"
    args = ["train", str(data), "--target", "dir_gap", "--out", str(out), "--epochs", "2"]
    assert main([*args, "--test-frac", "0.25", "--head", "hurdle", *TINY_ARGS]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["output_head"] == "hurdle" and config["model"]["output_features"] == 2
    card = json.loads((out / "model_card.json").read_text())
    assert card["selected_on"] == "validation hurdle loss"
    assert "val_loss" in card["training"]["history"][0]
    # the gate is a validation-MAE minimiser over the grid, and is stored
    tried = card["training"]["gate_val_mae"]
    assert len(tried) == 20 and card["training"]["gate_selected_by"] == "mae"
    chosen = f"k={config['gate_sharpness']:g},b={config['gate_bias']:g}"
    assert tried[chosen] == min(tried.values())
    structs, expected = _holdout_structures(out, shared_data)
    assert len(expected) == 15 and (expected >= 0).all()
    got = np.array(predict_structures(build(model=out), structs, batch_size=256))
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-7), np.abs(got - expected).max()


def test_weighted_hurdle_loss_matches_torch_bce_with_pos_weight() -> None:
    """The class-weighted hurdle loss = torch's own BCEWithLogitsLoss(pos_weight) on "gapped"
    plus the squared gap error summed over gapped rows / all rows (independent pieces)."""
    raw = torch.tensor([[2.0, 0.3], [-1.0, 1.5], [0.5, -0.7], [-3.0, 2.2], [1.2, 0.0]])
    y = torch.tensor([1.1, 0.0, 2.4, 0.0, 0.0])
    gapped = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    sq = torch.nn.functional.mse_loss(
        torch.nn.functional.softplus(raw[[0, 2], 1]), y[[0, 2]], reduction="sum"
    )
    for w in (None, 1.0, 4.0, 23.5):
        ref = torch.nn.BCEWithLogitsLoss(pos_weight=None if w is None else torch.tensor(w))
        expected = ref(raw[:, 0], gapped) + sq / 5
        assert torch.allclose(hurdle_loss(raw, y, pos_weight=w), expected, atol=1e-6)
    # the weight changes the loss (the test can fail): w = 4 vs unweighted
    assert hurdle_loss(raw, y, pos_weight=4.0) > hurdle_loss(raw, y) + 0.1


def test_pos_weight_auto_is_metals_over_gapped() -> None:
    assert resolve_pos_weight("auto", np.array([0, 0, 0, 1.2, 0, 2.0, 0, 0])) == 6 / 2
    assert resolve_pos_weight(None, np.array([0.0, 1.0])) is None
    assert resolve_pos_weight(2.5, np.array([0.0, 1.0])) == 2.5
    with pytest.raises(InputError, match="no gapped"):
        resolve_pos_weight("auto", np.zeros(4))


def test_bad_pos_weight_is_one_error_line(shared_data, tmp_path, capsys) -> None:
    data = _subset_csv(shared_data, tmp_path / "d.csv", 10)
    out = tmp_path / "m"
    args = ["train", str(data), "--target", "dir_gap", "--out", str(out), "--head", "hurdle"]
    assert main([*args, "--pos-weight", "-3", *TINY_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --pos-weight must be a number > 0 or 'auto', got '-3'"]
    assert not out.exists()


def test_zip_layout_loads_identically(trained, shared_data, tmp_path) -> None:
    zpath = tmp_path / "model.zip"
    with zipfile.ZipFile(zpath, "w") as zf:  # alignn's figshare zips hold a sub-folder
        for f in ("config.json", "best_model.pt"):
            zf.write(trained / f, f"perov_model/{f}")
    structs, expected = _holdout_structures(trained, shared_data)
    got = np.array(predict_structures(build(model=zpath), structs, batch_size=256))
    assert np.array_equal(got, expected)


def test_data_parallel_prefix_and_training_checkpoint_are_mapped(trained, tmp_path) -> None:
    d = tmp_path / "ddp"
    shutil.copytree(trained, d)
    state = torch.load(d / "best_model.pt", weights_only=True)
    torch.save(
        {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, d / "best_model.pt"
    )
    ref = build(model=trained).model.net.state_dict()
    got = build(model=d).model.net.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("drop", "missing keys fc.weight"),
        ("extra", "unexpected keys extra_head.weight"),
        ("arch", "unexpected keys alignn_layers.0"),
        ("shape", "weight shapes differ"),
        ("name", "architecture 'mystery' is not supported"),
        ("legacy", "config for architecture 'alignn': calculate_gradient: Extra inputs"),
        ("garbage", "cannot read the weights"),
        ("noconfig", "not an ALIGNN checkpoint directory"),
        ("head", "output_head 'relu6' is not supported"),
        ("head2", "2 output.*output_features=1"),
        ("sharpness", "gate_sharpness must be a number in"),
    ],
)
def test_bad_checkpoints_fail_loudly(trained, tmp_path, edit, message) -> None:
    d = tmp_path / "bad"
    shutil.copytree(trained, d)
    state = torch.load(d / "best_model.pt", weights_only=True)
    config = json.loads((d / "config.json").read_text())
    if edit == "drop":
        state.pop("fc.weight")
    elif edit == "extra":
        state["extra_head.weight"] = torch.zeros(2)
    elif edit == "arch":  # a checkpoint with more layers than config.json says
        config["model"]["alignn_layers"] = 0
    elif edit == "shape":
        config["model"]["hidden_features"] = 24
    elif edit == "name":
        config["model"]["name"] = "mystery"
    elif edit == "legacy":  # the original ALIGNN's schema has no atomwise fields
        config["model"]["name"] = "alignn"
    elif edit == "head":  # an output head this version does not know
        config["output_head"] = "relu6"
    elif edit == "head2":  # a two-output head declared on one-output weights
        config["output_head"] = "hurdle"
    elif edit == "sharpness":
        config["gate_sharpness"] = -2
    if edit == "garbage":
        (d / "best_model.pt").write_bytes(b"not a torch file")
    else:
        torch.save(state, d / "best_model.pt")
    (d / "config.json").write_text(json.dumps(config))
    if edit == "noconfig":
        (d / "config.json").unlink()
    with pytest.raises(InputError, match=message):
        build(model=d)


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="unknown ALIGNN model 'no-such-model'.*perov5-band-gap"):
        build(model="no-such-model")


def test_missing_target_column(shared_data, tmp_path, capsys) -> None:
    data = _subset_csv(shared_data, tmp_path / "d.csv", 10)
    out = tmp_path / "m"
    rc = main(["train", str(data), "--target", "gap", "--out", str(out), *TINY_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "target column 'gap' not found; columns are" in err and "dir_gap" in err
    assert not out.exists()


def test_bad_rows_are_reported_and_skipped(shared_data, tmp_path) -> None:
    bad = {
        3: {"cif": "data_broken\n_cell_length_a 4\n"},
        5: {"heat_ref": "nan"},
        7: {"heat_ref": ""},
    }
    data = _subset_csv(shared_data, tmp_path / "d.csv", 100, bad)
    warnings = []
    ds = load_dataset(data, "heat_ref", warn=warnings.append)
    assert len(ds.targets) == 97 and 3 not in ds.rows and 4 in ds.rows
    assert ds.skipped == {"unparsable structure": [3], "missing or NaN target": [5, 7]}
    assert "skipped 3 of 100 rows" in warnings[0] and "(3)" in warnings[0]


def test_too_many_bad_rows_abort_without_output(shared_data, tmp_path, capsys) -> None:
    bad = {i: {"cif": "garbage"} for i in (2, 4, 6, 8)}
    data = _subset_csv(shared_data, tmp_path / "d.csv", 20, bad)
    out = tmp_path / "m"
    rc = main(["train", str(data), "--target", "heat_ref", "--out", str(out), *TINY_ARGS])
    err = capsys.readouterr().err
    assert rc == 2
    assert "4 of 20 rows are bad (limit 5%)" in err
    assert "unparsable structure: 4 rows (2, 4, 6, 8)" in err
    assert not out.exists()


def test_json_dataset_with_structure_dicts(shared_data, tmp_path) -> None:
    import gzip

    ds = load_dataset(_subset_csv(shared_data, tmp_path / "d.csv", 5), "dir_gap")
    recs = [
        {"id": i, "structure": s.as_dict(), "y": float(y)}
        for i, s, y in zip(ds.ids, ds.structures, ds.targets)
    ]
    path = tmp_path / "d.json.gz"
    path.write_bytes(gzip.compress(json.dumps(recs).encode()))
    again = load_dataset(path, "y")
    assert again.ids == ds.ids and np.array_equal(again.targets, ds.targets)
    assert all(a == b for a, b in zip(again.structures, ds.structures))


def test_read_checkpoint_rejects_non_checkpoints(tmp_path) -> None:
    with pytest.raises(InputError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "nothing")


def test_alignn_pretrained_name_uses_alignn_cache_then_download(trained, tmp_path, monkeypatch):
    """By name: alignn's cache (~/.alignn2_models/<name>) first, else alignn's download helper."""
    import requests

    monkeypatch.setenv("HOME", str(tmp_path))
    name = "formation_energy_peratom_radius"

    def offline(*args, **kwargs):
        raise requests.ConnectionError("no network in this test")

    monkeypatch.setattr("alignn.pretrained.requests.get", offline)
    with pytest.raises(InputError, match=f"'{name}' is not cached and could not be downloaded"):
        build(model=name)
    cached = tmp_path / ".alignn2_models" / name
    assert not cached.exists()  # the empty folder alignn made for the download is removed
    shutil.copytree(trained, cached)
    (cached / "model_card.json").unlink()  # as alignn's zips: config.json + best_model.pt only
    pred = build(model=name)
    assert pred.properties == {"formation_energy_per_atom": "eV/atom"}  # from config target


def test_gate_by_f1_picks_the_best_f1_on_validation(shared_data, tmp_path) -> None:
    """``--gate-by f1``: the chosen offset b maximises F1 of "gapped" = l > b on the validation
    split, recomputed here with scikit-learn from the model's own validation logits."""
    from sklearn.metrics import f1_score, roc_auc_score

    from smoacs_flows.predictors.alignn_training import (
        featurise,
        load_dataset,
        predict_samples,
        split_indices,
    )

    # every gapped row of the first 1,500 of val.csv plus as many metals: F1 means something
    with open(shared_data / "perov_5" / "val.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for _, r in zip(range(1500), reader)]
        fields = reader.fieldnames
    gapped = [r for r in rows if float(r["dir_gap"]) > 0]
    metals = [r for r in rows if float(r["dir_gap"]) == 0][: len(gapped)]
    assert len(gapped) >= 30
    data_path = tmp_path / "d.csv"
    with open(data_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows([r for pair in zip(gapped, metals, strict=True) for r in pair])
    out = tmp_path / "m"
    args = ["train", str(data_path), "--target", "dir_gap", "--out", str(out), "--epochs", "2"]
    assert main([*args, "--head", "hurdle", "--gate-by", "f1", *TINY_ARGS]) == 0
    card = json.loads((out / "model_card.json").read_text())
    config = json.loads((out / "config.json").read_text())
    tr = card["training"]
    assert tr["gate_selected_by"] == "f1" and len(tr["gate_val_f1"]) == 20
    chosen = f"k={config['gate_sharpness']:g},b={config['gate_bias']:g}"
    assert tr["gate_val_f1"][chosen] == max(tr["gate_val_f1"].values())
    # independent recomputation on the same validation rows
    data = load_dataset(data_path, "dir_gap")
    _, val, _ = split_indices(len(data.targets), 0, 0.1, 0.1)
    model = build(model=out).model
    y = np.array([data.targets[i] for i in val])
    samples = featurise([data.structures[i] for i in val], y, model.config)
    logit = predict_samples(model, samples, raw=True)[:, 0]
    f1 = f1_score(y > 0, logit > config["gate_bias"], zero_division=0.0)
    assert f1 == pytest.approx(tr["gate_val_f1"][chosen], abs=1e-6)
    assert 0 < (y > 0).sum() < len(y)
    assert tr["classifier_val_auc"] == pytest.approx(roc_auc_score(y > 0, logit), abs=1e-6)
