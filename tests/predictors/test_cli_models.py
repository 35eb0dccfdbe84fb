"""`smoacs-flows predict` and `smoacs-flows models list`."""

from __future__ import annotations

import csv
import json

import pytest

from smoacs_flows.cli import main
from smoacs_flows.io import write_jsonl
from smoacs_flows.predictors.alignn import build, predict_structures
from smoacs_flows.predictors.alignn_training import load_dataset


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def few(shared_data):
    return load_dataset(shared_data / "perov_5" / "test.csv", "heat_ref", limit=6)


def test_models_list_json(capsys) -> None:
    assert main(["models", "list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    gap = models["perov5-band-gap"]
    assert gap["property"] == "band_gap" and gap["units"] == "eV" and gap["mae"] > 0
    assert gap["source"] == "shipped" and "perov_5" in gap["training_data"]
    assert models["perov5-formation-energy"]["units"] == "eV/atom"


def test_models_list_table_and_cached_models(tmp_path, monkeypatch, capsys) -> None:
    import os
    import shutil

    from smoacs_flows.predictors.alignn import SHIPPED_DIR

    cache = tmp_path / "home" / "models" / "my-model"
    shutil.copytree(SHIPPED_DIR / "perov5-band-gap", cache)
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")  # rich would wrap names in a narrow table
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "perov5-band-gap" in out and "my-model" in out and "cached" in out
    assert os.path.isdir(cache)
    assert build(model="my-model").property_name == "band_gap"


def test_predict_csv_jsonl_and_folder_agree(few, tmp_path, capsys) -> None:
    expected = predict_structures(build(model="perov5-formation-energy"), few.structures)
    # CSV with a cif column
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material_id", "cif"])
        for i, s in zip(few.ids, few.structures):
            w.writerow([i, s.to(fmt="cif")])
    # JSON lines as propose writes them
    jl = tmp_path / "proposals.jsonl"
    write_jsonl(
        jl, [{"id": f"c-0-{k}", "structure": s.as_dict()} for k, s in enumerate(few.structures)]
    )
    # a folder of CIFs
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, s in enumerate(few.structures):
        s.to(filename=str(folder / f"s{k}.cif"))
    for inp in (src, jl, folder):
        out = tmp_path / f"pred_{inp.name}.csv"
        assert (
            main(["predict", "--model", "perov5-formation-energy", str(inp), "--out", str(out)])
            == 0
        )
        rows = _read_csv(out)
        assert [r["units"] for r in rows] == ["eV/atom"] * 6
        assert [r["property"] for r in rows] == ["formation_energy_per_atom"] * 6
        got = [float(r["prediction"]) for r in rows]
        assert got == pytest.approx(expected, abs=1e-5)
    assert [r["id"] for r in _read_csv(tmp_path / "pred_in.csv.csv")] == few.ids
    # table output
    assert main(["predict", "--model", "perov5-band-gap", str(jl)]) == 0
    assert "c-0-5" in capsys.readouterr().out


def test_predict_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("name,value\na,1\n")
    assert main(["predict", "--model", "perov5-band-gap", str(bad)]) == 2
    assert "needs a 'cif'" in capsys.readouterr().err
    assert main(["predict", "--model", "nope", str(bad)]) == 2
    assert "unknown ALIGNN model 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--model", "perov5-band-gap", str(empty)]) == 2
    assert "no .cif files" in capsys.readouterr().err


def test_models_list_prints_full_names_in_a_narrow_terminal(tmp_path, monkeypatch, capsys):
    import shutil

    from smoacs_flows.predictors.alignn import SHIPPED_DIR

    long_name = "my-perovskite-band-gap-model-trained-on-perov5-2026"
    shutil.copytree(SHIPPED_DIR / "perov5-band-gap", tmp_path / "home" / "models" / long_name)
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "70")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    shipped = [d.name for d in SHIPPED_DIR.iterdir() if d.is_dir()]
    for name in [*shipped, long_name]:
        assert name in out, f"{name} truncated:\n{out}"
    assert "…" not in out


def test_predict_a_single_cif_file(few, tmp_path, capsys) -> None:
    expected = predict_structures(build(model="perov5-band-gap"), few.structures[:1])
    cif = tmp_path / "CaTiO3-like.cif"
    few.structures[0].to(filename=str(cif))
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", "perov5-band-gap", str(cif), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert [r["id"] for r in rows] == ["CaTiO3-like"]
    assert float(rows[0]["prediction"]) == pytest.approx(expected[0], abs=1e-5)
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a 3\n")
    assert main(["predict", "--model", "perov5-band-gap", str(bad)]) == 2
    assert "bad.cif: not a readable CIF" in capsys.readouterr().err
