"""Issue 22, part 1: data loss and destruction, blow-ups, unsafe reads (each fails on the code
before the fix). In-process CLI calls through :func:`tests.chaos._cli.call`, plus real
processes where the outcome is a process's own (its stderr, what is left on disk)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.chaos._cli import call
from tests.chaos._procs import cli_argv, env_for
from tests.chaos.test_fuzz import PEROV, campaign_home, in_campaign_home  # noqa: F401

pytestmark = pytest.mark.chaos

#: a 1 KB "billion laughs": nine levels of nine aliases, 9**9 (387 million) leaves expanded
LAUGHS = "lol0: &a0 [lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def _campaign(d: Path, extra: str = "") -> Path:
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(PEROV) + extra)
    return path


# ----------------------------------------------------------------------------- blow-ups


def test_billion_laughs_is_one_short_error(tmp_path, monkeypatch) -> None:
    """Aliases expanding to billions of values are refused at load, with a short line (the
    unbounded loader expands them under validation: a 351 MB error line, or GBs of memory)."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    path = _campaign(tmp_path, LAUGHS.replace("lol", "z") + "losses2: *a9\n")
    o = call(["propose", str(path), "--out", str(tmp_path / "out")], limit=30)
    assert o.code == 2, o.err
    assert len(o.error_lines()) == 1 and len(o.err) < 3000, o.err[:300]
    assert "aliases" in o.err and str(path) in o.err
    assert not (tmp_path / "out").exists()


def test_recursive_alias_is_refused(tmp_path) -> None:
    """``&a [*a]`` is a list that holds itself: PyYAML builds it; walking it never ends."""
    path = _campaign(tmp_path, "loop: &l [*l]\n")
    o = call(["propose", str(path), "--out", str(tmp_path / "out")], limit=30)
    assert o.code == 2 and "recursive alias" in o.err, o.err


def test_echoed_error_line_is_bounded(tmp_path) -> None:
    """A huge value echoed in an error message is cut: the line stays short."""
    path = _campaign(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["name"] = ["x" * 200] * 2000  # 400 KB of a wrong-typed value
    path.write_text(yaml.safe_dump(data))
    o = call(["propose", str(path), "--out", str(tmp_path / "out")], limit=30)
    assert o.code == 2, o.err[:300]
    assert len(o.err) < 3000


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_template_symlink_to_dev_zero(tmp_path, monkeypatch) -> None:
    """``z.cif -> /dev/zero`` in a template folder is refused by name instead of read until
    memory runs out; so is the same link given to ``dft run``."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "z.cif").symlink_to("/dev/zero")
    data = {**PEROV, "templates": [{"source": str(folder), "patterns": [[2, 4, -2]]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    o = call(["propose", str(path), "--out", str(tmp_path / "out")], limit=30)
    assert o.code == 2, o.err[:300]
    assert "z.cif" in o.err and "not a regular file" in o.err, o.err
    o = call(["dft", "run", str(folder / "z.cif"), "--out", str(tmp_path / "d")], limit=30)
    assert o.code == 2 and "not a regular file" in o.err, o.err


# ----------------------------------------------------------------------------- --out targets


def test_force_never_deletes_the_home_or_the_campaign(tmp_path, monkeypatch) -> None:
    """``propose --out $SMOACS_HOME --force`` used to delete the LaunchPad, job store and
    results; ``--out <folder holding the campaign> --force`` the campaign file."""
    home = tmp_path / "home"
    (home / "launchpad").mkdir(parents=True)
    keep = home / "launchpad" / "fireworks.json"
    keep.write_text("{}")
    monkeypatch.setenv("SMOACS_HOME", str(home))
    camp_dir = tmp_path / "camp"
    camp_dir.mkdir()
    path = _campaign(camp_dir)
    for out, needle in ((home, "SMOACS home"), (tmp_path, "SMOACS home"), (camp_dir, "input")):
        o = call(["propose", str(path), "--out", str(out), "--force"], limit=60)
        assert o.code == 2 and needle in o.err, (out, o.err)
        assert keep.read_text() == "{}" and path.is_file()


def test_out_that_is_a_fifo_is_not_replaced(tmp_path, monkeypatch) -> None:
    """A non-regular ``--out`` (a FIFO here; a character device as root) is refused, not
    replaced by a regular file (``builder`` writes through the same atomic writer as
    ``query``/``report``)."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    fifo = tmp_path / "x"
    os.mkfifo(fifo)
    o = call(["builder", str(fifo)], limit=60)
    assert o.code == 2 and "not a regular file" in o.err, o.err
    assert fifo.is_fifo()
    o = call(["query", "--campaign", "nope", "--format", "json", "--out", str(fifo)], limit=60)
    assert o.code == 2 and "not a regular file" in o.err and fifo.is_fifo(), o.err
    o = call(["report", "nope", "--out", str(fifo)], limit=60)
    assert o.code == 2 and "not a regular file" in o.err and fifo.is_fifo(), o.err


def test_propose_out_that_is_a_file(tmp_path, monkeypatch) -> None:
    """``propose --out FILE --force`` refuses instead of deleting the file."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    path = _campaign(tmp_path)
    victim = tmp_path / "notes.txt"
    victim.write_text("mine")
    o = call(["propose", str(path), "--out", str(victim), "--force"], limit=60)
    assert o.code == 2 and "not a folder" in o.err, o.err
    assert victim.read_text() == "mine"


def test_query_out_fifo_on_a_campaign(in_campaign_home, tmp_path) -> None:  # noqa: F811
    """``query CAMPAIGN --out FIFO`` on a real campaign (where the old code wrote its table
    over the FIFO) is refused; the FIFO is still one."""
    fifo = tmp_path / "q"
    os.mkfifo(fifo)
    for fmt in ("json", "csv"):
        o = call(["query", "--campaign", "fuzzflow", "--format", fmt, "--out", str(fifo)], limit=60)
        assert o.code == 2 and "not a regular file" in o.err, o.err
        assert fifo.is_fifo()


# ----------------------------------------------------------------------------- resume checks


def _lp_bytes(home: Path) -> dict[str, bytes]:
    """Every file under the embedded LaunchPad folder, by relative path."""
    root = home / "launchpad"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--gpaw", "maxiter=abc"], "--gpaw maxiter"),
        (["--gpaw", "ecut=-5"], "--gpaw ecut"),
        (["--stage", "dtf"], "--stage dtf"),
        (["--stage", "dft", "--stage", "nope", "--run"], "--stage nope"),
    ],
)
def test_resume_refuses_bad_overrides_when_nothing_failed(argv, needle, in_campaign_home) -> None:  # noqa: F811
    """Nothing has failed in the submitted campaign: bad overrides and stage names are still
    refused (exit 2, one line), and the LaunchPad is left as it was."""
    home, _ = in_campaign_home
    before = _lp_bytes(home)
    o = call(["resume", "fuzzflow", *argv], limit=60)
    assert o.code == 2 and needle in o.err, o.err
    assert len(o.error_lines()) == 1
    assert _lp_bytes(home) == before


# ----------------------------------------------------------------------------- real process


def test_billion_laughs_real_process(tmp_path) -> None:
    """The same bomb through ``submit`` in a real process: exit 2 within seconds, one short
    stderr line, nothing added to the LaunchPad."""
    home = tmp_path / "home"
    path = _campaign(tmp_path, LAUGHS.replace("lol", "q") + "predictors2: *a9\n")
    p = subprocess.run(
        cli_argv("submit", str(path)),
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr[-500:]
    assert len(p.stderr) < 3000 and p.stderr.count("error:") == 1, p.stderr[:500]


# ----------------------------------------------------------------------------- unsafe import


def _forget(module: str) -> None:
    sys.modules.pop(module, None)


def test_maker_class_outside_the_allow_list_is_not_imported(capsys) -> None:
    """``class: this.Nope`` used to import ``this`` (printing the Zen of Python) before the type
    check; an ``@module`` in the kwargs likewise. Now refused by name, nothing imported."""
    from smoacs_flows.dft.vasp import MakerSpec
    from smoacs_flows.errors import SpecError

    for spec in (
        {"class": "this.Nope"},
        {"class": "atomate2.vasp.jobs.core.NonSCFMaker", "kwargs": {"x": {"@module": "this"}}},
    ):
        _forget("this")
        with pytest.raises(SpecError, match="module 'this' is not allowed"):
            MakerSpec.model_validate(spec).build("stages.dft.vasp.dos_maker")
        assert "this" not in sys.modules
    assert "Beautiful is better" not in capsys.readouterr().out


def test_reference_json_module_outside_the_allow_list(tmp_path) -> None:
    """An ``@module`` key in a reference-entries JSON is checked before monty imports it."""
    from smoacs_flows.errors import InputError
    from smoacs_flows.screening.references import _decode_entries

    _forget("this")
    with pytest.raises(InputError, match=r"refs.json\[0\].@module: module 'this'"):
        _decode_entries([{"@module": "this", "@class": "X"}], "refs.json")
    assert "this" not in sys.modules


def test_submit_with_unsafe_maker_class_real_process(tmp_path) -> None:
    """``submit`` of a VASP campaign naming ``this.Nope``: exit 2, one line, no Zen."""
    from tests.chaos.test_fuzz import FLOW

    data = json.loads(json.dumps(FLOW))
    data["stages"]["dft"] = {"engine": "vasp", "vasp": {"dos_maker": {"class": "this.Nope"}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    p = subprocess.run(
        cli_argv("submit", str(path)),
        env=env_for(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-500:]
    assert "not allowed" in p.stderr and "Beautiful is better" not in p.stdout + p.stderr


# ----------------------------------------------------------------------------- results index


@pytest.mark.parametrize("damage", [b"", b"not a database at all" * 100])
def test_results_index_rebuilds_itself_from_the_store(tmp_path, damage) -> None:
    """A 0-byte (or garbage) ``candidates_index.sqlite`` used to make ``query`` answer
    "unknown campaign ... (known: none)" for ever while the store held the candidates (the
    builder's ledger says nothing changed, so it never rewrote the index). The next connect
    rebuilds it from the candidates collection."""
    from maggma.stores import MemoryStore

    from smoacs_flows.stores.results import embedded_results_store

    path = tmp_path / "results"
    r = embedded_results_store(path).connect()
    docs = [
        {
            "candidate_id": f"c-{i}",
            "campaign": "c",
            "version": 1,
            "stage": "relaxed",
            "state": "pending",
            "formula": "Fe",
            "elements": ["Fe"],
            "content_hash": f"h{i}",
        }
        for i in range(3)
    ]
    led = [{"key": "campaign:c:1", "campaign": "c", "version": 1, "signature": "s"}]
    r.builder(MemoryStore()).update_targets(
        [{"campaign": "c", "version": 1, "docs": docs, "ledger": led, "sections": []}]
    )
    assert r.campaigns() == {"c": 1}
    r.close()
    (path / "candidates_index.sqlite").write_bytes(damage)
    r = embedded_results_store(path).connect()
    try:
        assert r.campaigns() == {"c": 1}  # what the candidates collection holds
        assert sorted(r.index.hashes("c", 1)) == ["c-0", "c-1", "c-2"]
    finally:
        r.close()


# ----------------------------------------------------------------------------- lost runs


def test_resume_run_takes_a_killed_workers_firework_as_lost(tmp_path, monkeypatch) -> None:
    """A worker checked out a firework and was killed (its heartbeat is fresh). With no
    ``run`` of the campaign alive, ``resume C --run`` reruns it without ``--lost-after 0``;
    it used to print "nothing failed; running what still waits" and make no progress."""
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
    from smoacs_flows.makers.worker import make_fworker
    from tests.chaos.test_fuzz import FLOW, _dump

    home = tmp_path / "home"
    monkeypatch.setenv("SMOACS_HOME", str(home))
    path = tmp_path / "c.yaml"
    path.write_bytes(_dump(FLOW))
    assert call(["submit", str(path)]).code == 0
    lp = EmbeddedLaunchPad(home / "launchpad" / "fireworks.json")
    with lp.session(write=True):
        ready = lp.fireworks.find_one({"state": "READY"})
        cat = ready["spec"]["_category"]
        fworker = make_fworker(cat, ready["spec"]["tags"][0])
        fw, _ = lp.checkout_fw(fworker, str(tmp_path / "launch"), fw_id=ready["fw_id"])
    assert fw is not None  # RUNNING now, as a worker that was then SIGKILLed left it
    o = call(["resume", "fuzzflow", "--run", "--dry-run"], limit=60)
    assert o.code == 0, o.err
    assert f"would rerun {ready['name']} (fw {ready['fw_id']}" in o.out and "LOST" in o.out, o.out
    # with a run alive (its lock held), the same firework is not taken from it
    from smoacs_flows.makers.run import _hold_alive_lock

    run_dir = home / "runs" / "fuzzflow-v1"
    run_dir.mkdir(parents=True)
    held = _hold_alive_lock(run_dir)
    try:
        o = subprocess.run(
            cli_argv("resume", "fuzzflow", "--run", "--dry-run"),
            env=env_for(home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert o.returncode == 0 and "would rerun" not in o.stdout, o.stdout + o.stderr
    finally:
        held.close()


# ----------------------------------------------------------------------------- huge cells


def _big_cell(path: Path) -> Path:
    """A 1,008-site simple-cubic Fe cell (7 x 12 x 12 supercell, 2.5 Å spacing) as a CIF."""
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(2.5), ["Fe"], [[0, 0, 0]])
    s.make_supercell([7, 12, 12])
    assert len(s) == 1008
    s.to(filename=str(path))
    return path


def test_dft_run_refuses_a_1008_site_cell(tmp_path) -> None:
    """``dft run`` on 1,008 sites used to run for hours (and leave ``.dft-*`` when killed)."""
    cif = _big_cell(tmp_path / "big.cif")
    o = call(["dft", "run", str(cif), "--out", str(tmp_path / "dft-big")], limit=60)
    assert o.code == 2 and "1008 sites" in o.err and len(o.error_lines()) == 1, o.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.cif"]


def test_propose_refuses_a_1008_site_template(tmp_path, monkeypatch) -> None:
    """A 1,008-site template file used to end ``propose`` in a RecursionError."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    cif = _big_cell(tmp_path / "big.cif")
    data = {**PEROV, "templates": [{"source": str(cif), "patterns": [[2, 4, -2]]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    o = call(["propose", str(path), "--out", str(tmp_path / "out")], limit=60)
    assert o.code == 2 and "1008 sites" in o.err, o.err
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(300)
def test_sigterm_during_dft_run_removes_its_temporary_folder(tmp_path) -> None:
    """SIGTERM of ``dft run`` mid-calculation: the process ends and its ``.dft-al.*``
    temporary folder is gone (the default SIGTERM ended Python without cleanup)."""
    from pymatgen.core import Lattice, Structure

    cif = tmp_path / "al.cif"
    Structure(
        Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    ).to(filename=str(cif))
    argv = cli_argv("dft", "run", str(cif), "--out", str(tmp_path / "dft-al"), "--ecut", "250")
    p = subprocess.Popen(argv, env=env_for(tmp_path / "home"), stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while not list(tmp_path.glob(".dft-al.*/gpaw")) and time.monotonic() < end:
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.2)
        assert list(tmp_path.glob(".dft-al.*")), "dft run never started its calculation"
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert not list(tmp_path.glob(".dft-*")), list(tmp_path.iterdir())
    assert not (tmp_path / "dft-al").exists()


# ----------------------------------------------------------------------------- bad job outputs


def _job(uuid: str, output: object) -> dict:
    return {
        "uuid": uuid,
        "index": 1,
        "completed_at": "2026-01-01T00:00:00",
        "metadata": {"stage": "propose", "campaign": "c", "tags": ["smoacs:c:v1"]},
        "output": output,
    }


def test_one_bad_job_output_is_skipped_and_named(tmp_path, capsys) -> None:
    """An output of the wrong shape and one whose blob is missing from its store used to be a
    traceback for the whole store; now each is skipped with a warning naming its job, and the
    good output still gives its candidate."""
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from smoacs_flows.stores.results import embedded_results_store

    js = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    js.connect()
    good = {"records": [{"id": "c-good", "template": "t", "formula": "Fe"}], "versions": {}}
    js.docs_store.update(
        [
            _job("u-good", good),
            _job("u-shape", {"records": [5]}),  # a record that is no mapping
            _job("u-blob", {"@class": "x", "blob_uuid": "b1", "store": "nowhere"}),
        ],
        key="uuid",
    )
    r = embedded_results_store(tmp_path / "results").connect()
    b = r.builder(js)
    b.connect()
    items = [b.process_item(it) for it in b.get_items()]
    b.update_targets(items)
    err = capsys.readouterr().err
    assert "u-shape" in err and "u-blob" in err and "u-good" not in err, err
    ids = [d["candidate_id"] for d in r.candidates.query({}, properties=["candidate_id"])]
    assert "c-good" in ids
    r.close()


def test_query_out_never_overwrites_the_launchpad(in_campaign_home) -> None:  # noqa: F811
    """``query --out $SMOACS_HOME/launchpad/fireworks.json`` would have replaced the LaunchPad
    with a table; refused, the LaunchPad unchanged."""
    home, _ = in_campaign_home
    lp_file = home / "launchpad" / "fireworks.json"
    before = lp_file.read_bytes()
    o = call(["query", "--campaign", "fuzzflow", "--format", "json", "--out", str(lp_file)])
    assert o.code == 2 and "inside the SMOACS home" in o.err, o.err
    assert lp_file.read_bytes() == before


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_predict_folder_does_not_read_dev_zero(tmp_path) -> None:
    """A ``z.cif -> /dev/zero`` link in a ``predict`` folder is a named problem (the other
    files still read) instead of a read that fills memory."""
    from pymatgen.core import Lattice, Structure

    from smoacs_flows.predictors.cli import read_structures

    Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(tmp_path / "a.cif")
    )
    (tmp_path / "z.cif").symlink_to("/dev/zero")
    ids, structs, problems = read_structures(tmp_path)
    assert ids == ["a"] and len(structs[0]) == 2
    assert len(problems) == 1 and "z.cif" in problems[0] and "not a regular file" in problems[0]


def test_force_never_deletes_a_template_folder(tmp_path, monkeypatch) -> None:
    """``propose --out <the template folder> --force`` used to replace the templates with the
    proposals; refused, the template file kept."""
    from pymatgen.core import Lattice, Structure

    monkeypatch.setenv("SMOACS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "tpl"
    folder.mkdir()
    coords = [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"], coords).to(
        filename=str(folder / "sto.cif")
    )
    data = {
        **PEROV,
        "templates": [{"source": str(folder), "patterns": [[2, 4, -2, -2, -2]]}],
        "losses": [{"term": "element_reduction"}],
        "success": {},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    o = call(["propose", str(path), "--out", str(folder), "--force"], limit=120)
    assert o.code == 2 and "holds the input" in o.err, o.err
    assert (folder / "sto.cif").is_file()
