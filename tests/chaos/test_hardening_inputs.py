"""Issue 22, part 2: accepted nonsense becomes one ``error:`` line, read-only commands write
nothing, ``validate`` checks what ``submit`` checks. Each case was accepted (or wrote) before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chaos._cli import assert_clean, call
from tests.chaos.test_fuzz import FLOW, PEROV

pytestmark = pytest.mark.chaos


def _write(d: Path, spec: dict, text: str | None = None) -> Path:
    path = d / "c.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"seed": True}, "seed: expected an integer"),
        ({"schedule": {**PEROV["schedule"], "steps": "2"}}, "schedule.steps"),
        ({"schedule": {**PEROV["schedule"], "lr": {"lengths": -1e308}}}, "schedule.lr.lengths"),
        ({"name": "x" * 5000}, "name"),
        ({"stages": {"screenning": {"steps": 5}}}, "stages.screenning"),
        ({"stages": {"dtf": {}}}, "stages.dtf"),
        ({"stages": {"dft": {"gpaw": {"xc": "LOL"}}}}, "stages.dft.gpaw.xc"),
        ({"stages": {"dft": {"category": "../../x"}}}, "stages.dft.category"),
        ({"stages": {"screening": {"steps": 10**12}}}, "stages.screening.steps"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "submit"])
def test_nonsense_in_a_campaign_is_refused(tmp_path, monkeypatch, command, change, needle) -> None:
    home = Path(tmp_path / "home")
    path = _write(tmp_path, {**FLOW, **change})
    monkeypatch.setenv("SMOACS_HOME", str(home))
    o = call([command, str(path)])
    assert o.code == 2, o
    assert_clean(o, (needle.split(":")[0],))
    assert needle.split(":")[0] in o.error_lines()[0]
    assert not home.exists()  # nothing written, not even the home


def test_duplicate_keys_are_refused(tmp_path) -> None:
    text = yaml.safe_dump(FLOW) + "seed: 3\nseed: 4\n"
    o = call(["validate", str(_write(tmp_path, {}, text))])
    assert o.code == 2 and "appears twice" in o.error_lines()[0], o


def test_validate_passes_a_good_campaign_and_writes_nothing(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SMOACS_HOME", str(home))
    path = _write(tmp_path, FLOW)
    before = sorted(p.name for p in tmp_path.iterdir())
    o = call(["validate", str(path), "--json"])
    assert o.code == 0, o
    import json

    out = json.loads(o.out)
    assert out["valid"] and out["jobs"] > 0 and out["stages"]["propose"] >= 1
    assert not home.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_read_only_commands_do_not_create_the_home(tmp_path, monkeypatch) -> None:
    home = tmp_path / "nowhere"
    monkeypatch.setenv("SMOACS_HOME", str(home))
    o = call(["query", "--format", "json"])
    assert o.code == 0 and o.out.strip() == "[]", o
    assert str(home) in o.err and "SMOACS_HOME" in o.err
    o = call(["status", "demo"])
    assert o.code == 2 and str(home) in o.error_lines()[0], o
    assert not home.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["query", "--version", "-1"], "--version"),
        (["query", "--max-elements", "-5"], "--max-elements"),
        (["query", "--where", "e_above_hull<=nan"], "e_above_hull"),
        (["query", "--where", "nelements<=-5"], "nelements"),
        (["query", "--e-hull-max", "nan"], "--e-hull-max"),
        (["query", "--limit", "-3"], "--limit"),
        (["query", "--format", "cif"], "--out"),
        (["status", "demo", "--lost-after", "nan"], "--lost-after"),
    ],
)
def test_query_numbers_that_cannot_match(argv, needle) -> None:
    o = call(argv)
    assert o.code == 2, o
    assert_clean(o, (needle,))


def test_quiet_drops_the_store_lines(in_campaign_home) -> None:  # noqa: F811
    loud = call(["query", "--no-update"])
    quiet = call(["query", "--no-update", "--quiet"])
    assert loud.code == quiet.code == 0
    assert "LaunchPad:" in loud.err and "results store:" in loud.err
    assert "LaunchPad:" not in quiet.err and "results store:" not in quiet.err
    assert quiet.out == loud.out


from tests.chaos.test_fuzz import campaign_home, in_campaign_home  # noqa: E402, F401


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["screen", "x", "--out", "y", "--fmax", "nan"], "--fmax"),
        (["screen", "x", "--out", "y", "--fmax", "-1"], "--fmax"),
        (["screen", "x", "--out", "y", "--steps", "0"], "--steps"),
        (["predict", "x", "--model", "m", "--batch-size", "0"], "--batch-size"),
        (["predict", "x", "--model", "m", "--batch-size", "-1"], "--batch-size"),
        (["run", "x.yaml", "--timeout", "-1"], "--timeout"),
        (["run", "x.yaml", "--poll", "nan"], "--poll"),
        (["propose", "x.yaml", "--out", "o", "--steps", "0"], "--steps"),
        (["train", "d.csv", "--target", "y", "--out", "o", "--val-frac", "1.5"], "--val-frac"),
        (["dft", "run", "x.cif", "--ecut", "-300"], "--ecut"),
        (["status", "c", "--version", "0"], "--version"),
    ],
)
def test_numeric_options_that_can_only_be_mistakes(tmp_path, monkeypatch, argv, needle) -> None:
    monkeypatch.chdir(tmp_path)
    o = call(argv)
    assert o.code == 2, o
    assert_clean(o, (needle,))
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def _cif(path: Path, symbol: str) -> Path:
    from pymatgen.core import DummySpecies, Lattice, Structure

    sp = DummySpecies(symbol) if symbol == "Xx" else symbol
    Structure(Lattice.cubic(4.0), [sp, "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(path))
    return path


def test_dft_run_names_a_placeholder_species(tmp_path) -> None:
    o = call(["dft", "run", str(_cif(tmp_path / "x.cif", "Xx"))])
    assert o.code == 2 and "Xx" in o.error_lines()[0] and "not a chemical element" in o.err, o


def test_dft_run_on_a_campaign_names_the_formats() -> None:
    from tests.smoacs.helpers import ROOT

    o = call(["dft", "run", str(ROOT / "campaigns" / "halfmetal_small.yaml")])
    assert o.code == 2, o
    line = o.error_lines()[0]
    assert "CIF" in line and "POSCAR" in line and "submit or run" in line


def test_a_broken_model_card_is_one_line(tmp_path) -> None:
    import shutil

    from smoacs_flows.predictors.alignn import SHIPPED_DIR

    model = tmp_path / "m"
    shutil.copytree(SHIPPED_DIR / "perov5-band-gap", model)
    (model / "model_card.json").write_text("{bad")
    cif = _cif(tmp_path / "s.cif", "Na")
    o = call(["predict", str(cif.parent), "--model", str(model)])
    assert o.code == 2 and "model_card.json is not valid JSON" in o.error_lines()[0], o


def test_training_on_a_binary_file_is_one_line(tmp_path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(bytes(range(256)) * 8)
    o = call(["train", str(data), "--target", "y", "--out", str(tmp_path / "o")])
    assert o.code == 2 and "not a UTF-8 text file" in o.error_lines()[0], o
    assert not (tmp_path / "o").exists()


def test_a_home_that_is_a_file(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("SMOACS_HOME", str(home))
    for argv in (["query"], ["status", "c"]):
        o = call(argv)
        assert o.code == 2 and "is a file, not a folder" in o.error_lines()[0], o
    assert home.read_text() == "not a folder"


def test_full_disk_during_gpaw_is_one_error_line(tmp_path) -> None:
    """GPAW's log files are ours to close: a full disk mid-SCF is one error line, with no
    destructor traceback after it and no temporary folder left (a real tmpfs, 300 kB)."""
    import shutil
    import subprocess
    import sys

    from tests.chaos.test_faults import _mount, _umount

    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)):
        pytest.skip("mounting a tmpfs needs root")
    try:
        (disk / "fill").write_bytes(b"\0" * (296 * 1024))  # ~4 kB left
        cif = _cif(tmp_path / "al.cif", "Na")
        argv = ["dft", "run", str(cif), "--engine", "gpaw", "--ecut", "150"]
        argv += ["--kpoint-density", "1", "--dense-kpoint-density", "1"]
        argv += ["--out", str(disk / "res")]
        env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-m", "smoacs_flows.cli", *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 2, out.stderr
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "No space left" in lines[0], out.stderr
        assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr
        assert sorted(p.name for p in disk.iterdir()) == ["fill"]
    finally:
        _umount(disk)
        shutil.rmtree(disk, ignore_errors=True)
