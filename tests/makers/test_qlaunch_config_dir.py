"""FireWorks' own ``qlaunch -c DIR/gpu singleshot`` (the venv's ``qlaunch`` binary) on the
folder of ``launchers init``: ``DIR/gpu/`` holds FireWorks' standard ``my_fworker.yaml``,
``my_qadapter.yaml`` and ``my_launchpad.yaml``. The LaunchPad is FireWorks' MongoDB one on a
mongomock-persistence server file (``MONGOMOCK_SERVERSTORE_FILE``); the queue is the stand-in
``sbatch`` of tests/makers/_slurm.py, whose job runs FireWorks' plain ``rlaunch``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bson.json_util
import yaml

from smoacs_flows.cli import main
from tests.makers import _slurm
from tests.makers._campaign import ROOT

ADD = """
from fireworks import Firework, LaunchPad, ScriptTask, Workflow
lp = LaunchPad.from_file({lp!r})
lp.reset("", require_password=False)
for q in ("gpu", "cpu"):
    fw = Firework(ScriptTask.from_str("echo ran-" + q + " > {out}/" + q + ".txt"),
                  spec={{"_category": q}}, name="toy-" + q)
    lp.add_wf(Workflow([fw]))
"""


def test_fireworks_qlaunch_c_per_queue_folder(tmp_path):
    server = tmp_path / "server.json"
    server.write_text("{}")
    lp_file = tmp_path / "lp.yaml"
    lp_file.write_text(yaml.safe_dump({"host": "localhost", "port": 27017, "name": "qc"}))
    cfg = tmp_path / "fw"
    assert main(["launchers", "init", str(cfg), "--launchpad", str(lp_file)]) == 0
    for q in ("gpu", "cpu", "vasp"):
        names = sorted(p.name for p in (cfg / q).iterdir())
        assert names == ["my_fworker.yaml", "my_launchpad.yaml", "my_qadapter.yaml"]
    assert oct((cfg / "gpu" / "my_launchpad.yaml").stat().st_mode)[-3:] == "600"

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(
        MONGOMOCK_SERVERSTORE_FILE=str(server),
        STANDIN_SLURM_DIR=str(tmp_path / "slurm"),
        PATH=os.pathsep.join([str(tmp_path / "bin"), str(bin_dir), env["PATH"]]),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    env.pop("FW_CONFIG_FILE", None)
    _slurm.install(tmp_path / "bin", tmp_path / "slurm")
    code = ADD.format(lp=str(cfg / "gpu" / "my_launchpad.yaml"), out=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

    run = tmp_path / "run"
    run.mkdir()
    r = subprocess.run(
        [str(bin_dir / "qlaunch"), "-c", str(cfg / "gpu"), "singleshot"],
        cwd=run, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "No path specified" not in r.stdout + r.stderr
    _slurm.wait_all(tmp_path / "slurm", timeout=300)
    jobs = _slurm.jobs(tmp_path / "slurm")
    assert [j["partition"] for j in jobs.values()] == ["gpu"]
    out = "".join(p.read_text()[-2000:] for p in run.glob("slurm-*.out"))
    assert jobs[1]["rc"] == 0, out
    assert f"-w {cfg / 'gpu' / 'my_fworker.yaml'} singleshot" in jobs[1]["script"]
    # the job ran the gpu firework only (its worker's category), with FireWorks' rlaunch
    assert (tmp_path / "gpu.txt").read_text().strip() == "ran-gpu", out
    assert not (tmp_path / "cpu.txt").exists()
    fws = bson.json_util.loads(server.read_text())["qc"]["fireworks"]["documents"]
    assert {f["name"]: f["state"] for _, f in fws} == {"toy-gpu": "COMPLETED", "toy-cpu": "READY"}
