"""FireWorks' own ``qlaunch -c DIR/gpu singleshot`` (the venv's ``qlaunch`` binary) on the
folder of ``launchers init``: ``DIR/gpu/`` holds FireWorks' standard ``my_fworker.yaml``,
``my_qadapter.yaml`` and ``my_launchpad.yaml``. The LaunchPad is FireWorks' MongoDB one on a
mongomock-persistence server file (``MONGOMOCK_SERVERSTORE_FILE``); the queue is the stand-in
``sbatch`` of tests/makers/_slurm.py, whose job runs FireWorks' plain ``rlaunch``."""

from __future__ import annotations

import bson.json_util
import yaml

from smoacs_flows.cli import main
from tests.makers import _slurm

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

    code = ADD.format(lp=str(cfg / "gpu" / "my_launchpad.yaml"), out=str(tmp_path))
    r, run, jobs = _slurm.qlaunch_singleshot(
        tmp_path, cfg / "gpu", code, server, OMP_NUM_THREADS="1"
    )
    assert "No path specified" not in r.stdout + r.stderr
    assert [j["partition"] for j in jobs.values()] == ["gpu"]
    out = "".join(p.read_text()[-2000:] for p in run.glob("slurm-*.out"))
    assert jobs[1]["rc"] == 0, out
    assert f"-w {cfg / 'gpu' / 'my_fworker.yaml'} singleshot" in jobs[1]["script"]
    # the job ran the gpu firework only (its worker's category), with FireWorks' rlaunch
    assert (tmp_path / "gpu.txt").read_text().strip() == "ran-gpu", out
    assert not (tmp_path / "cpu.txt").exists()
    fws = bson.json_util.loads(server.read_text())["qc"]["fireworks"]["documents"]
    assert {f["name"]: f["state"] for _, f in fws} == {"toy-gpu": "COMPLETED", "toy-cpu": "READY"}
