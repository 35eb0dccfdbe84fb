"""A worker killed with SIGKILL in the middle of a GPAW job: ``status`` shows the lost run,
``resume`` reruns only it, and the candidates collection then holds every candidate exactly
once. The same campaign checks the builder (idempotent, interrupted and rerun) and the queries.

The module fixture does the whole story (run, kill, status, dry run, resume to completion) and
records what each step printed, so every test here passes alone. Where ``SMOACS_TEST_CACHE``
names a folder (``.ci/run`` sets one per CI run), the finished campaign is kept there and later
pytest processes copy it instead of redoing the 50 s run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from smoacs_flows.cli import main
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.stores import embedded_job_store
from smoacs_flows.stores.results import (
    QueryError,
    QueryIndex,
    embedded_results_store,
    query,
    update_results,
)
from tests._env import with_smoacs_home
from tests.makers._campaign import (
    CHEAP_STAGES,
    METALLIC_CHANNELS,
    ROOT,
    metallic_channels,
    tiny_campaign,
    write_campaign,
)

TAG = "smoacs:kill:v1"


def _worker(category: str, tag: str, launch_dir: Path, stop: Path) -> subprocess.Popen:
    env = {k: os.environ[k] for k in ("SMOACS_HOME", "PATH", "HOME") if k in os.environ}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    launch_dir.mkdir(parents=True, exist_ok=True)
    log = (launch_dir / "worker.log").open("w")  # read it when the fixture fails
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smoacs_flows.makers.worker",
            "--category",
            category,
            "--tag",
            tag,
            "--launch-dir",
            str(launch_dir),
            "--stop-file",
            str(stop),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _fws(lp: EmbeddedLaunchPad, tag: str) -> dict[str, dict]:
    with lp.session(write=False):
        return {d["name"]: d for d in lp.fireworks.find({"spec.tags": tag})}


def _cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with its standard output captured (a module fixture has no capsys)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _wait_for_scf(launch_dir: Path, workers: list[subprocess.Popen], timeout: float = 600) -> str:
    """Block until a GPAW text log under ``launch_dir`` shows an SCF iteration; its path.
    Polls every 0.2 s until a GPAW log exists, then every 0.02 s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        logs = list(launch_dir.rglob("gpaw/*.txt"))
        for log in logs:
            with contextlib.suppress(OSError):
                if "iter:" in log.read_text(errors="replace"):
                    return str(log)
        assert all(w.poll() is None for w in workers), "a worker died by itself"
        time.sleep(0.02 if logs else 0.2)
    raise AssertionError(f"no GPAW SCF iteration under {launch_dir} in {timeout} s")


def _kill_and_resume(home: Path, work: Path) -> dict[str, Any]:
    """Run the campaign under ``home``, SIGKILL the cpu worker inside GPAW, then status, dry
    run and resume to completion; return what each step showed (JSON-serialisable)."""
    path = write_campaign(
        work / "c.yaml", tiny_campaign(name="kill", n=4, batch=2, stages=CHEAP_STAGES)
    )
    assert _cli(["submit", str(path)])[0] == 0
    lp = EmbeddedLaunchPad()
    stop = work / "STOP"
    gpu = _worker("gpu", TAG, home / "launch" / "gpu", stop)
    cpu = _worker("cpu", TAG, home / "launch" / "cpu", stop)
    # Kill at GPAW's first SCF iteration, not after a fixed sleep: on a fast idle machine the
    # cheap GPAW chain finishes in a few seconds (a 3 s sleep once let it complete). The log is
    # watched from the start (no LaunchPad poll in between to lose time on); the firework the
    # kill left RUNNING is read afterwards.
    in_scf = _wait_for_scf(home / "launch" / "cpu", [cpu, gpu])
    cpu.send_signal(signal.SIGKILL)
    cpu.wait()
    stop.touch()
    gpu.wait(timeout=60)
    fws = _fws(lp, TAG)
    states = {n: fw["state"] for n, fw in fws.items()}
    running = next(
        (fw for n, fw in fws.items() if n.startswith("dft gpaw ") and fw["state"] == "RUNNING"),
        None,
    )
    assert running is not None, f"no GPAW firework RUNNING after the kill: {states}"
    facts: dict[str, Any] = {
        "gpaw": running["name"],
        "killed_in": Path(in_scf).name,
        "before": {n: fw["state"] for n, fw in fws.items()},
        "launches_before": {n: len(fw["launches"]) for n, fw in fws.items()},
    }
    rc, out = _cli(["status", "kill", "--lost-after", "0", "--json"])
    facts["status"] = {"rc": rc, "json": json.loads(out)}
    facts["dry_run"] = dict(
        zip(("rc", "out"), _cli(["resume", "kill", "--lost-after", "0", "--dry-run"]), strict=True)
    )
    facts["state_after_dry_run"] = _fws(lp, TAG)[running["name"]]["state"]
    facts["resume"] = dict(
        zip(("rc", "out"), _cli(["resume", "kill", "--lost-after", "0", "--run"]), strict=True)
    )
    return facts


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The campaign after kill + resume: its SMOACS_HOME and the recorded facts."""
    home = tmp_path_factory.mktemp("kill_home")
    cache = os.environ.get("SMOACS_TEST_CACHE")
    cached = Path(cache) / "kill_resume" if cache else None
    with with_smoacs_home(home):
        if cached is not None and (cached / "facts.json").is_file():
            shutil.copytree(cached / "home", home, dirs_exist_ok=True)
            facts = json.loads((cached / "facts.json").read_text())
        else:
            facts = _kill_and_resume(home, tmp_path_factory.mktemp("kill"))
            if cached is not None:
                part = cached.with_name(cached.name + ".part")
                shutil.rmtree(part, ignore_errors=True)
                shutil.copytree(home, part / "home")
                (part / "facts.json").write_text(json.dumps(facts))
                part.rename(cached)
        yield {**facts, "lp": EmbeddedLaunchPad(), "tag": TAG, "home": home}


@pytest.fixture
def kill_env(killed_and_resumed, monkeypatch):
    monkeypatch.setenv("SMOACS_HOME", str(killed_and_resumed["home"]))
    return killed_and_resumed


@pytest.mark.slow
def test_kill9_during_gpaw_then_resume(kill_env):
    k = kill_env
    lp, tag, gpaw = k["lp"], k["tag"], k["gpaw"]
    assert k["before"][gpaw] == "RUNNING"  # what the killed worker left behind
    # status: the run is lost (no heartbeat for 0 s), the funnel reached DFT selection
    assert k["status"]["rc"] == 0
    st = k["status"]["json"]
    assert st["fireworks"]["dft"].get("LOST") == 1
    assert [f["name"] for f in st["lost"]] == [gpaw]
    assert st["funnel"]["proposed"] == 4 and st["funnel"]["sun"] >= 1
    assert st["funnel"]["stable"] is None  # no reference phases: not evaluated, not "all"

    # dry run: lists the lost run, changes nothing
    assert k["dry_run"]["rc"] == 0
    out = k["dry_run"]["out"]
    assert f"would rerun {gpaw}" in out and "LOST" in out and "lost run" in out
    assert k["state_after_dry_run"] == "RUNNING"

    assert k["resume"]["rc"] == 0
    out = k["resume"]["out"]
    assert f"rerunning {gpaw}" in out and "campaign kill v1: done" in out
    fws = _fws(lp, tag)
    assert {fw["state"] for fw in fws.values()} == {"COMPLETED"}
    # nothing that had completed ran again; the GPAW job ran once more
    for name, n in k["launches_before"].items():
        if name == gpaw:
            assert len(fws[name]["launches"]) == 1 and len(fws[name]["archived_launches"]) == 1
        elif k["before"][name] == "COMPLETED":
            assert len(fws[name]["launches"]) == n == 1, name

    # every candidate exactly once, the DFT'd one with its verdict
    stats = update_results(launchpad=lp)
    assert stats["job_outputs_processed"] > 0
    found = query(campaign="kill", sort=None)
    ids = [c.candidate_id for c in found]
    assert len(ids) == len(set(ids)) == 4
    dft = [c for c in found if c.summary["stage"] == "dft"]
    assert len(dft) == 1 and dft[0].candidate_id == fws[gpaw]["spec"]["candidate_id"]
    assert dft[0].summary["state"] == "done"
    # the verdict: the same in the summary, the DFT section and the status funnel, and the
    # channels it calls metallic are those with states at E_F in the stored DOS
    verdict = dft[0].doc["dft"]["verdict"]
    assert dft[0].summary["verdict"] == verdict
    rc, out = _cli(["status", "kill", "--json", "--no-update"])
    funnel = json.loads(out)["funnel"]
    assert rc == 0 and funnel["dft"] == 1 and funnel["half_metal"] == (verdict == "half_metal")
    store = embedded_job_store()
    store.connect()
    doc = store.query_one({"metadata.stage": "dft", "name": gpaw})
    result = store.get_output(doc["uuid"], load=True)
    assert result["analysis"]["verdict"] == verdict
    assert sum(metallic_channels(result).values()) == METALLIC_CHANNELS[verdict]
    magnetic = max(abs(result["moment_per_fu"]), *map(abs, result["site_moments"])) >= 0.1
    assert magnetic == (verdict in ("half_metal", "near_half_metal", "magnetic_metal")), verdict
    assert dft[0].doc["dft"]["engine"] == "gpaw"
    assert dft[0].structure.composition.reduced_formula == dft[0].summary["formula"]
    # the funnel status showed before the resume counts the screening survivors now stored;
    # with no reference phases configured none of them is called S.U.N.
    assert st["funnel"]["sun"] == sum(c.summary["stage"] in ("sun", "dft") for c in found) >= 1
    assert not any(c.summary["sun"] for c in found)
    assert st["sun_label"] == "passed (no stability or novelty filter)"
    prov = dft[0].doc["provenance"]
    assert prov["versions"]["proposal"]["smoacs-flows"] and prov["versions"]["relax"]["chgnet"]
    assert set(prov["job_uuids"]) == {"proposal", "prefilter", "relax", "sun", "dft"}
    assert {c.summary["state"] for c in found} == {"done"}


@pytest.mark.slow
def test_builder_idempotent_and_interruptible(kill_env, monkeypatch):
    lp = kill_env["lp"]
    update_results(launchpad=lp)

    def dump() -> list[dict]:
        with embedded_results_store() as rs:
            docs = list(rs.candidates.query({}))
            rows = rs.index.conn.execute(
                "SELECT candidate_id, content_hash FROM candidates ORDER BY 1"
            ).fetchall()
        for d in docs:
            d.pop("_id", None)
            d.pop("last_updated", None)
        return sorted(docs, key=lambda d: d["candidate_id"]), rows

    first = dump()
    again = update_results(launchpad=lp)
    assert again.get("job_outputs_processed", 0) == 0 and again.get("documents_written", 0) == 0
    assert dump() == first

    # a fresh results store, interrupted after the candidates were written but before the
    # query index and the ledger: the rerun finishes the job and loses nothing
    import shutil

    shutil.rmtree(Path(kill_env["home"]) / "results")
    calls = {"n": 0}
    real = QueryIndex.replace

    def crash(self, *a, **kw):
        calls["n"] += 1
        raise KeyboardInterrupt("killed mid-build")

    monkeypatch.setattr(QueryIndex, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        update_results(launchpad=lp)
    assert calls["n"] == 1
    monkeypatch.setattr(QueryIndex, "replace", real)
    update_results(launchpad=lp)
    assert dump() == first


@pytest.mark.slow
def test_queries_on_the_campaign(kill_env, tmp_path, capsys):
    lp = kill_env["lp"]
    update_results(launchpad=lp)
    everything = query(campaign="kill", sort=None)
    # the SQLite index and the Mongo query on the candidates store agree
    rs = embedded_results_store().connect()
    index, rs.index = rs.index, None
    try:
        for kw in (
            {"max_elements": 3},
            {"exclude": ["Fe"]},
            {"include": ["Fe"]},
            {"state": "done"},
            {"where": ["stage=dft|sun"]},
            {"sun": True},
        ):
            a = {c.candidate_id for c in query(campaign="kill", results=rs, **kw)}
            rs.index = index
            b = {c.candidate_id for c in query(campaign="kill", results=rs, **kw)}
            rs.index = None
            expect = {c.candidate_id for c in everything if _matches(c.summary, kw)}
            assert a == b == expect, kw
    finally:
        rs.index = index
        rs.close()
    # sorted, limited, exported
    by_e = [c for c in everything if c.summary["mlip_energy_per_atom"] is not None]
    top = query(campaign="kill", sort="mlip_energy_per_atom", limit=2)
    assert [c.candidate_id for c in top] == [
        c.candidate_id for c in sorted(by_e, key=lambda c: c.summary["mlip_energy_per_atom"])
    ][:2]
    for fmt, out in (("csv", tmp_path / "k.csv"), ("cif", tmp_path / "cif")):
        argv = ["query", "--campaign", "kill", "--format", fmt, "--out", str(out), "--no-update"]
        assert main(argv) == 0, fmt
    assert (tmp_path / "k.csv").read_text().count("\n") == 5
    from pymatgen.core import Structure

    cifs = sorted((tmp_path / "cif").glob("*.cif"))
    assert len(cifs) == 4 and Structure.from_file(cifs[0]).num_sites > 0
    # the HTML report of the campaign, with its funnel and the DFT'd candidate
    assert main(["report", "kill", "--out", str(tmp_path / "r.html"), "--no-update"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert 'data-chart="funnel"' in html and 'data-chart="periodic_table"' in html
    assert dft_id(everything) in html
    capsys.readouterr()
    # bad input: clear errors, non-zero exit, nothing written
    for argv, msg in (
        (["--campaign", "nope"], "unknown campaign 'nope'"),
        (["--include", "Xx"], "'Xx' is not an element"),
        (["--where", "colour=red"], "unknown filter field 'colour'"),
        (["--where", "nelements<=many"], "is not a int"),
        (["--verdict", "metal"], "verdict: 'metal' is not one of"),
    ):
        assert (
            main(
                [
                    "query",
                    *argv,
                    "--no-update",
                    "--format",
                    "json",
                    "--out",
                    str(tmp_path / "bad.json"),
                ]
            )
            != 0
        )
        assert msg in capsys.readouterr().err, argv
        assert not (tmp_path / "bad.json").exists()
    with pytest.raises(QueryError, match="unknown campaign"):
        query(campaign="nope")
    assert main(["resume", "kill", "--incar", "ALGO"]) != 0
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["status", "nope"]) != 0
    assert "unknown campaign 'nope'" in capsys.readouterr().err


def dft_id(cands: list) -> str:
    return next(c.candidate_id for c in cands if c.summary["stage"] == "dft")


def _matches(s: dict, kw: dict) -> bool:
    els = set(s["elements"])
    if "max_elements" in kw and not s["nelements"] <= kw["max_elements"]:
        return False
    if "exclude" in kw and els & set(kw["exclude"]):
        return False
    if "include" in kw and not set(kw["include"]) <= els:
        return False
    if "state" in kw and s["state"] != kw["state"]:
        return False
    if "where" in kw and s["stage"] not in ("dft", "sun"):
        return False
    return not ("sun" in kw and s["sun"] is not True)
