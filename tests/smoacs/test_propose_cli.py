"""``smoacs-flows propose``: outputs, and bad input that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pymatgen.core import Structure

from smoacs_flows.cli import main

from .helpers import ROOT

BASE = {
    "name": "cli-test",
    "device": "cpu",
    "templates": [{"source": "perovskite", "count": 2, "patterns": [[2, 4, -2]]}],
    "losses": [{"term": "tolerance_factor", "target": 0.9}, {"term": "element_reduction"}],
    "geometry": {"angles": {"fixed": True}, "coords": {"mode": "bounded", "epsilon": 0.1}},
    "schedule": {"steps": 5, "n_candidates": 4, "batch_size": 4},
}


def _write(tmp_path: Path, spec: dict | str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return p


def test_propose_writes_records_and_cifs(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["propose", str(_write(tmp_path, BASE)), "--out", str(out), "--quiet"]) == 0
    lines = (out / "proposals.jsonl").read_text().splitlines()
    assert len(lines) == 4
    recs = [json.loads(line) for line in lines]
    for rec in recs:
        s = Structure.from_dict(rec["structure"])
        assert s.composition.reduced_formula == rec["reduced_formula"]
        # the CIF holds the record's structure
        cif = Structure.from_file(out / "cif" / f"{rec['id']}.cif")
        assert cif.composition == s.composition
        assert cif.lattice.abc == pytest.approx(s.lattice.abc, abs=1e-4)
        # angles fixed: the cubic perovskite template keeps its right angles
        assert s.lattice.angles == pytest.approx((90.0, 90.0, 90.0), abs=1e-4)
        # the one allowed pattern (A2+ B4+ X2-), neutral
        assert rec["oxidation_pattern"] == [2, 4, -2, -2, -2] and rec["success"]["neutral"]
        # minimum interatomic distance as pymatgen's neighbour list finds it (images included)
        dmin = min(n.nn_distance for site in s.get_all_neighbors(8.0) for n in site)
        assert rec["min_distance"] == pytest.approx(dmin, abs=1e-3)
        assert rec["success"]["min_distance"] == (dmin >= 0.5)
        evaluated = [v for k, v in rec["success"].items() if k != "all" and v is not None]
        assert rec["success"]["all"] == all(evaluated)
        assert set(rec["success"]) >= {"neutral", "tolerance", "template_preserved", "all"}
        assert rec["losses"]["total"] == pytest.approx(
            rec["losses"]["tolerance_factor"] + rec["losses"]["element_reduction"], rel=1e-5
        )
    # the summary's success table counts the records
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_exported"] == 4
    for name, ok, n in summary["success"]:
        flags = [r["success"][name] for r in recs if r["success"][name] is not None]
        assert (ok, n) == (sum(flags), len(flags)), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "tolerance" in printed and "neutral" in printed


def test_existing_output_is_refused_without_force(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["propose", str(_write(tmp_path, BASE)), "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s["schedule"].update(stepz=3), "schedule.stepz"),
        (lambda s: s.update(exclude=["rohs", "Qq"]), "'Qq' is neither a preset"),
        (lambda s: s["losses"].append({"term": "warp_drive"}), "unknown loss term 'warp_drive'"),
        (lambda s: s["templates"].append({"source": "nowhere.cif"}), "nowhere.cif"),
        (
            lambda s: s["losses"].append({"term": "energy", "predictor": "mlip"}),
            "losses[2].predictor",
        ),
        (lambda s: s.update(name="bad name!"), "name"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(tmp_path, capsys, mutate, needle) -> None:
    spec = json.loads(json.dumps(BASE))
    mutate(spec)
    out = tmp_path / "out"
    code = main(["propose", str(_write(tmp_path, spec)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1  # one line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_invalid_yaml_names_the_line(tmp_path, capsys) -> None:
    path = _write(tmp_path, "name: x\ntemplates: [\n  - source: perovskite\n")
    assert main(["propose", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML" in err and "line" in err
    assert not (tmp_path / "o").exists()


def test_unreadable_template_file_is_named(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a nonsense\n")
    spec = dict(BASE, templates=[{"source": str(bad)}], losses=[{"term": "element_reduction"}])
    code = main(["propose", str(_write(tmp_path, spec)), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "broken.cif" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_example_campaigns_validate() -> None:
    from smoacs_flows.campaign import load_campaign

    paths = sorted((ROOT / "campaigns").glob("*.yaml"))
    assert {p.name for p in paths} >= {"halfmetal_small.yaml", "perovskite.yaml"}
    for path in paths:
        camp = load_campaign(path)
        raw = yaml.safe_load(path.read_text())
        # what the file says is what the campaign holds
        assert camp.name == raw["name"], path
        assert [t.term for t in camp.losses] == [t["term"] for t in raw["losses"]], path
        assert len(camp.templates) == len(raw["templates"]), path
        for t in camp.templates:
            if t.source not in ("perovskite", "mp"):  # built-in sources; else a path
                assert (path.parent / t.source).exists(), t.source
