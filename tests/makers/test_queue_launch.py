"""The cluster path with FireWorks' own tools: the config folder of ``launchers init
--embedded``, FireWorks' queue launcher (``queue_launcher.rapidfire`` with reservation on the
gpu queue, without on the cpu queue; ``launch_rocket_to_queue`` with reservation for a rerun)
and a stand-in ``sbatch``/``squeue`` that runs each job script in the background.

One tiny campaign, shared by the module: its GPAW job is forced to fail (``maxiter: 2``);
FireWorks' ``lpad`` (``smoacs-flows lpad``) lists it; ``resume --walltime 02:00:00 --gpaw
maxiter=60`` reruns it and the next script submitted carries ``#SBATCH --time=02:00:00``; the
campaign then completes. The JobStore comes from jobflow's settings file (``JOBFLOW_CONFIG_FILE``
= the folder's ``jobflow.yaml``, a MontyStore in a temporary folder): ``submit``, the queue jobs,
``status``, ``query`` and ``report`` use it and the embedded default store stays empty.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smoacs_flows.cli import main
from smoacs_flows.makers.run import decide, stage_counts
from tests.makers import _slurm
from tests.makers._campaign import CHEAP_STAGES, ROOT, tiny_campaign, write_campaign

TAG = "smoacs:qtiny:v1"
DEADLINE = 900  # s, per phase


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "smoacs_flows.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _fws(lp) -> dict[str, dict]:
    with lp.session(write=False):
        return {d["name"]: d for d in lp.fireworks.find({"spec.tags": TAG})}


def _drive(lp, cfg: Path, tmp: Path, state: Path) -> str:
    """FireWorks' queue launcher on both queues until the campaign stops changing."""
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import rapidfire
    from fireworks.utilities.fw_serializers import load_object_from_file

    workers = {q: FWorker.from_file(str(cfg / f"my_fworker_{q}.yaml")) for q in ("gpu", "cpu")}
    qads = {q: load_object_from_file(str(cfg / f"my_qadapter_{q}.yaml")) for q in ("gpu", "cpu")}
    # the test machine has 2 shared cores: one thread per job
    qads["gpu"]["pre_rocket"] = qads["gpu"]["pre_rocket"].replace("THREADS=8", "THREADS=1")
    t0 = time.monotonic()
    while True:
        verdict = decide(stage_counts(lp, TAG))
        running = [j for j in _slurm.jobs(state).values() if j["rc"] is None]
        if verdict and not running:
            return verdict
        if time.monotonic() - t0 > DEADLINE:
            outs = "\n".join(p.read_text()[-2000:] for p in tmp.rglob("slurm-*.out"))
            raise AssertionError(f"campaign not finished: {stage_counts(lp, TAG)}\n{outs}")
        rapidfire(
            lp, workers["gpu"], qads["gpu"], str(tmp / "gpu"), nlaunches=0, sleep_time=1,
            reserve=True, timeout=20,
        )  # fmt: skip
        rapidfire(
            lp, workers["cpu"], qads["cpu"], str(tmp / "cpu"), nlaunches=0, njobs_queue=1,
            sleep_time=1, reserve=False, timeout=20,
        )  # fmt: skip
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Run the scenario once; yield what each test checks."""
    import fireworks.queue.queue_launcher as ql
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import launch_rocket_to_queue
    from fireworks.utilities.fw_serializers import load_object_from_file

    from smoacs_flows.makers.launchpad import open_launchpad

    tmp = tmp_path_factory.mktemp("qlaunch")
    saved = dict(os.environ)
    saved_interval = ql.QUEUE_UPDATE_INTERVAL
    ql.QUEUE_UPDATE_INTERVAL = 1  # s after each submission (5 by default): a quicker test
    try:
        os.environ["SMOACS_HOME"] = str(tmp / "home")
        for var in ("FW_CONFIG_FILE", "JOBFLOW_CONFIG_FILE", "SMOACS_JOB_STORE"):
            os.environ.pop(var, None)
        # a JobStore outside SMOACS_HOME, named by jobflow.yaml of the config folder
        db = str(tmp / "jf-db")
        common = {"type": "MontyStore", "database_path": db, "database_name": "jf"}
        (tmp / "store.yaml").write_text(
            yaml.safe_dump(
                {
                    "docs_store": {**common, "collection_name": "outputs", "key": "uuid"},
                    "additional_stores": {
                        "data": {**common, "collection_name": "blobs", "key": "blob_uuid"}
                    },
                }
            )
        )
        cfg = tmp / "fw"
        argv = ["launchers", "init", str(cfg), "--embedded", "--store", str(tmp / "store.yaml")]
        assert main(argv) == 0
        os.environ["FW_CONFIG_FILE"] = str(cfg / "FW_config.yaml")
        os.environ["JOBFLOW_CONFIG_FILE"] = str(cfg / "jobflow.yaml")
        state = tmp / "slurm"
        _slurm.install(tmp / "bin", state)
        os.environ["STANDIN_SLURM_DIR"] = str(state)
        os.environ["PATH"] = os.pathsep.join(
            [str(tmp / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
        )
        os.environ["PYTHONPATH"] = str(ROOT)
        os.environ["OMP_NUM_THREADS"] = "1"
        for q in ("gpu", "cpu"):
            (tmp / q).mkdir()

        stages = copy.deepcopy(CHEAP_STAGES)
        stages["dft"]["gpaw"]["maxiter"] = 2  # the SCF cannot converge: GPAW job fizzles
        path = write_campaign(tmp / "c.yaml", tiny_campaign(name="qtiny", stages=stages))
        facts: dict = {"tmp": tmp, "cfg": cfg, "state": state, "db": db}
        facts["submit"] = _cli("submit", str(path))
        assert facts["submit"].returncode == 0, facts["submit"].stderr
        lp = open_launchpad(cfg / "my_launchpad.yaml")
        facts["lp"] = lp
        facts["first"] = _drive(lp, cfg, tmp, state)
        facts["after_failure"] = {n: fw["state"] for n, fw in _fws(lp).items()}
        facts["get_wflows"] = _cli("lpad", "get_wflows")
        facts["get_fws"] = _cli("lpad", "get_fws", "-s", "FIZZLED", "-d", "more")
        facts["resume"] = _cli("resume", "qtiny", "--walltime", "02:00:00", "--gpaw", "maxiter=60")
        # the rerun goes to the queue in reservation mode, the way `qlaunch -r` sends it
        cpu_w = FWorker.from_file(str(cfg / "my_fworker_cpu.yaml"))
        cpu_q = load_object_from_file(str(cfg / "my_qadapter_cpu.yaml"))
        facts["rerun_job"] = launch_rocket_to_queue(
            lp, cpu_w, cpu_q, str(tmp / "cpu"), reserve=True, create_launcher_dir=True
        )
        facts["final"] = _drive(lp, cfg, tmp, state)
        facts["fws"] = _fws(lp)
        with lp.session(write=False):
            facts["launches"] = list(lp.launches.find({}))
        facts["jobs"] = _slurm.jobs(state)
        facts["status"] = _cli("status", "qtiny", "--json")
        facts["query"] = _cli("query", "--campaign", "qtiny", "--format", "json", "--no-update")
        facts["report"] = _cli("report", "qtiny", "--out", str(tmp / "r.html"), "--no-update")
        summary = facts["fws"]["summary"]["fw_id"] if "summary" in facts["fws"] else None
        facts["summary_id"] = summary
        facts["rerun_fws"] = _cli("lpad", "rerun_fws", "-i", str(summary))
        facts["summary_after_rerun"] = _fws(lp)["summary"]["state"]
        yield facts
    finally:
        ql.QUEUE_UPDATE_INTERVAL = saved_interval
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
def test_campaign_completes_through_fireworks_queue_launcher(cluster):
    assert "JOBFLOW_CONFIG_FILE=" in cluster["submit"].stderr
    assert "FW_CONFIG_FILE=" in cluster["submit"].stderr  # the LaunchPad of CONFIG_FILE_DIR
    assert cluster["final"] == "done"
    assert {fw["state"] for fw in cluster["fws"].values()} == {"COMPLETED"}
    gpaw = [n for n in cluster["fws"] if n.startswith("dft gpaw ")]
    assert len(gpaw) == 1 and cluster["after_failure"][gpaw[0]] == "FIZZLED"
    assert all(j["rc"] == 0 for j in cluster["jobs"].values())


@pytest.mark.slow
def test_each_queue_launches_only_its_category(cluster):
    tmp = cluster["tmp"]
    cats = {fw["fw_id"]: fw["spec"]["_category"] for fw in cluster["fws"].values()}
    assert set(cats.values()) == {"gpu", "cpu"}
    seen = set()
    for launch in cluster["launches"]:
        cat = cats.get(launch["fw_id"])
        if cat is None:
            continue
        d = Path(launch["launch_dir"])
        assert d.is_relative_to(tmp / cat), (cat, d)  # launched by a job of its queue
        assert launch["fworker"]["category"] == cat
        script = (d / "FW_submit.script").read_text()
        assert ("--gres=gpu:1" in script) == (cat == "gpu")
        assert f"my_fworker_{cat}.yaml singleshot" in script
        seen.add(cat)
    assert seen == {"gpu", "cpu"}
    # gpu jobs went to the gpu partition in reservation mode (one firework each, --fw_id)
    gpu_jobs = [j for j in cluster["jobs"].values() if j["partition"] == "gpu"]
    assert gpu_jobs and all("singleshot --fw_id" in j["script"] for j in gpu_jobs)


@pytest.mark.slow
def test_resume_walltime_reaches_the_next_script(cluster):
    res = cluster["resume"]
    assert res.returncode == 0, res.stderr
    assert "rerunning dft gpaw" in res.stdout and "_queueadapter" in res.stdout
    job = cluster["jobs"][int(cluster["rerun_job"])]
    assert "#SBATCH --time=02:00:00" in job["script"]
    first_cpu = [j for j in cluster["jobs"].values() if j["partition"] == "cpu"][0]
    assert "#SBATCH --time=12:00:00" in first_cpu["script"]  # the qadapter's own walltime


@pytest.mark.slow
def test_fireworks_lpad_on_the_embedded_launchpad(cluster):
    wf = cluster["get_wflows"]
    assert wf.returncode == 0, wf.stderr
    assert "qtiny v1" in wf.stdout and "LaunchPad: embedded" in wf.stderr
    fz = cluster["get_fws"]
    assert fz.returncode == 0, fz.stderr
    data = json.loads(fz.stdout)
    data = data if isinstance(data, list) else [data]
    assert [d["state"] for d in data] == ["FIZZLED"]
    assert data[0]["name"].startswith("dft gpaw ") and data[0]["launches"]
    rr = cluster["rerun_fws"]
    assert rr.returncode == 0, rr.stderr
    assert cluster["summary_after_rerun"] == "READY"


@pytest.mark.slow
def test_results_commands_read_the_jobflow_store(cluster, monkeypatch):
    from maggma.stores import MontyStore

    from smoacs_flows.stores import embedded_job_store

    st = cluster["status"]
    assert st.returncode == 0, st.stderr
    assert f"JOB_STORE of JOBFLOW_CONFIG_FILE={cluster['cfg'] / 'jobflow.yaml'}" in st.stderr
    assert f"montydb {cluster['db']}" in st.stderr
    funnel = json.loads(st.stdout)["funnel"]
    assert funnel["proposed"] == 2 and funnel["dft"] == 1
    q = cluster["query"]
    assert q.returncode == 0, q.stderr
    assert len(json.loads(q.stdout)) == 2
    assert cluster["report"].returncode == 0 and (cluster["tmp"] / "r.html").is_file()
    # the outputs are in the jobflow store; the embedded default store holds nothing
    jf = MontyStore("outputs", database_path=cluster["db"], database_name="jf", key="uuid")
    jf.connect()
    assert jf.count({"metadata.tags": TAG}) >= 6
    monkeypatch.setenv("SMOACS_HOME", str(cluster["tmp"] / "home"))
    emb = embedded_job_store()
    emb.connect()
    assert emb.docs_store.count() == 0 and emb.additional_stores["data"].count() == 0
