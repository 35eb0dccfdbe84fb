"""Workers and the embedded LaunchPad with real processes: routing by category, concurrent
submissions and writers, lost runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fireworks import Firework, ScriptTask, Workflow
from jobflow import Flow
from jobflow.managers.fireworks import flow_to_workflow

from smoacs_flows.makers.jobs import route
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.stores import embedded_job_store
from tests.makers._campaign import ROOT, tiny_campaign, write_campaign
from tests.makers._jobs import add

PY = sys.executable
ENV_KEYS = ("SMOACS_HOME", "PATH", "HOME")


def _env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _worker(category: str, tmp: Path, tag: str | None = None) -> subprocess.CompletedProcess:
    cmd = [
        PY,
        "-m",
        "smoacs_flows.makers.worker",
        "--category",
        category,
        "--until-idle",
        "--launch-dir",
        str(tmp / category),
        "--timeout",
        "240",
    ]
    if tag:
        cmd += ["--tag", tag]
    return subprocess.run(
        cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=True
    )


def _routing_flow() -> tuple[Flow, dict[str, str]]:
    a = route(add(1, 2), "gpu", {"stage": "a"})
    b = route(add(a.output, 10), "cpu", {"stage": "b"})
    c = route(add(b.output, 100), "gpu", {"stage": "c"})
    d = route(add(5, 5), "gpu", {"stage": "d"})
    for j, n in zip((a, b, c, d), "abcd"):
        j.name = n
    return Flow([a, b, c, d]), {"a": a.uuid, "b": b.uuid, "c": c.uuid, "d": d.uuid}


def _states(lp: EmbeddedLaunchPad) -> dict[str, str]:
    with lp.session(write=False):
        return {d["name"]: d["state"] for d in lp.fireworks.find({}, {"name": 1, "state": 1})}


def test_gpu_worker_runs_only_gpu_fireworks(tmp_path):
    flow, uuids = _routing_flow()
    lp = EmbeddedLaunchPad()
    store = embedded_job_store()
    lp.add_wf(flow_to_workflow(flow, store=store))
    _worker("gpu", tmp_path)
    assert _states(lp) == {"a": "COMPLETED", "d": "COMPLETED", "b": "READY", "c": "WAITING"}
    _worker("cpu", tmp_path)
    assert _states(lp) == {"a": "COMPLETED", "d": "COMPLETED", "b": "COMPLETED", "c": "READY"}
    _worker("gpu", tmp_path)
    assert set(_states(lp).values()) == {"COMPLETED"}
    # every launch was made by the worker of the firework's category
    with lp.session(write=False):
        cats = {d["fw_id"]: d["spec"]["_category"] for d in lp.fireworks.find({})}
        for launch in lp.launches.find({}):
            assert launch["fworker"]["category"] == cats[launch["fw_id"]]
            assert launch["fworker"]["name"] == f"smoacs-{cats[launch['fw_id']]}"
    store.connect()
    assert store.get_output(uuids["c"]) == 113


def test_concurrent_submit_processes_both_land(tmp_path):
    paths = [
        write_campaign(tmp_path / f"c{i}.yaml", tiny_campaign(name=f"camp{i}", n=4, batch=1))
        for i in range(2)
    ]
    procs = [
        subprocess.Popen(
            [PY, "-m", "smoacs_flows.cli", "submit", str(p), "--json"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in paths
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ids = [set(o["fw_ids"]) for o in outs]
    assert len(ids[0]) == len(ids[1]) == 4 + 4 + 4 + 3  # 4 batches → 4 propose/prefilter/relax
    assert not ids[0] & ids[1]
    lp = EmbeddedLaunchPad()
    assert sorted(lp.get_fw_ids()) == sorted(ids[0] | ids[1])
    assert sorted(d["metadata"]["smoacs_campaign"] for d in lp.workflows.find({})) == [
        "camp0",
        "camp1",
    ]


WRITER = """
import sys
from fireworks import Firework, ScriptTask, Workflow
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
lp = EmbeddedLaunchPad()
for i in range(int(sys.argv[2])):
    lp.add_wf(Workflow([Firework([], name=f"{sys.argv[1]}-{i}")]))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    """Without the lock, mongomock-persistence writers overwrite each other's workflows."""
    EmbeddedLaunchPad()  # create the file first
    n = 15
    procs = [
        subprocess.Popen(
            [PY, "-c", WRITER, f"w{k}", str(n)],
            cwd=ROOT,
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    lp = EmbeddedLaunchPad()
    names = sorted(fw["name"] for fw in lp.fireworks.find({}, {"name": 1}))
    assert names == sorted(f"w{k}-{i}" for k in range(3) for i in range(n))
    assert len(set(lp.get_fw_ids())) == 3 * n


def test_lost_run_is_detected_and_rerun(tmp_path):
    """A RUNNING firework whose worker died is found by detect_lostruns and can be rerun."""
    lp = EmbeddedLaunchPad()
    lp.add_wf(
        Workflow([Firework([ScriptTask.from_str("true")], name="x", spec={"_category": "cpu"})])
    )
    from smoacs_flows.makers.worker import make_fworker

    fw, launch_id = lp.checkout_fw(make_fworker("cpu"), str(tmp_path))
    assert fw is not None and _states(lp) == {"x": "RUNNING"}
    lost_launches, lost_fws, _ = lp.detect_lostruns(expiration_secs=0, rerun=True)
    assert lost_fws == [fw.fw_id] and lost_launches == [launch_id]
    assert _states(EmbeddedLaunchPad()) == {"x": "READY"}


def test_fizzled_firework_makes_the_run_stuck_with_its_reason(tmp_path):
    """A job that raises fizzles; with nothing else runnable the embedded run reports it."""
    from smoacs_flows.makers.run import decide, fizzled_reasons, stage_counts

    bad = route(add("a", 1), "cpu", {"stage": "prefilter"})  # str + int: TypeError
    bad.name = "bad"
    after = route(add(bad.output, 1), "cpu", {"stage": "sun"})
    lp = EmbeddedLaunchPad()
    wf = flow_to_workflow(Flow([bad, after]), store=embedded_job_store())
    for fw in wf.fws:
        fw.spec["tags"] = ["smoacs:x:v1"]
    lp.add_wf(wf)
    assert decide(stage_counts(lp, "smoacs:x:v1")) is None  # READY: still running
    _worker("cpu", tmp_path)
    counts = stage_counts(lp, "smoacs:x:v1")
    assert counts == {"prefilter": {"FIZZLED": 1}, "sun": {"WAITING": 1}}
    assert decide(counts) == "stuck"
    reasons = fizzled_reasons(lp, "smoacs:x:v1")
    assert len(reasons) == 1 and reasons[0].startswith("bad (fw ")
    assert "TypeError" in reasons[0]
    assert decide({"dft": {"FIZZLED": 1, "COMPLETED": 2}, "summary": {"COMPLETED": 1}}) == "done"


def test_two_cpu_workers_run_fireworks_side_by_side(tmp_path):
    """``run --cpu-workers 2``: two worker processes on the cpu category, each with its own
    log and launch folder; two 4 s fireworks each run by one of them, at the same time."""
    from smoacs_flows.makers.run import run_workers

    lp = EmbeddedLaunchPad()
    spec = {"_category": "cpu", "stage": "dft", "tags": ["smoacs:x:v1"]}
    lp.add_wf(
        Workflow(
            [Firework([ScriptTask.from_str("sleep 4")], name=f"f{i}", spec=spec) for i in (1, 2)]
        )
    )
    state, logs = run_workers(
        lp,
        "smoacs:x:v1",
        ["gpu", "cpu"],
        tmp_path / "run",
        poll=0.5,
        timeout=300,
        echo=lambda s: None,
        workers={"cpu": 2},
    )
    assert state == "done", [p.read_text()[-1000:] for p in logs]
    assert sorted(p.name for p in logs) == ["worker-cpu-2.log", "worker-cpu.log", "worker-gpu.log"]
    with lp.session(write=False):
        ids = [x["launch_id"] for x in lp.launches.find({}, {"launch_id": 1})]
        launches = [lp.get_launch_by_id(i) for i in ids]
    assert len(launches) == 2 and {x.state for x in launches} == {"COMPLETED"}
    assert {Path(x.launch_dir).parent.name for x in launches} == {"cpu", "cpu-2"}
    assert max(x.time_start for x in launches) < min(x.time_end for x in launches)
