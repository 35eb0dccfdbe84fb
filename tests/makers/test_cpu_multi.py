"""Every core of a cpu queue job busy (issue 23): ``launchers init --cpu-multi`` makes the cpu
job run FireWorks' own ``rlaunch multi N`` with N = the job's cores, one thread each. Run with
FireWorks' own ``qlaunch -c DIR/cpu singleshot`` (no reservation) against the stand-in
``sbatch`` on a mongomock-server LaunchPad: two 3-second fireworks run side by side in one
2-core job (their run intervals overlap), where ``singleshot`` would run one."""

from __future__ import annotations

import yaml

from smoacs_flows.cli import main
from tests.makers import _slurm

ADD = """
from fireworks import Firework, LaunchPad, ScriptTask, Workflow
lp = LaunchPad.from_file({lp!r})
lp.reset("", require_password=False)
for i in range(2):
    cmd = "date +%s.%N > {out}/start{{}}; sleep 3; date +%s.%N > {out}/end{{}}".format(i, i)
    lp.add_wf(Workflow([Firework(ScriptTask.from_str(cmd), spec={{"_category": "cpu"}})]))
"""


def test_cpu_multi_runs_one_rocket_per_core(tmp_path, capsys) -> None:
    server = tmp_path / "server.json"
    server.write_text("{}")
    lp_file = tmp_path / "lp.yaml"
    lp_file.write_text(yaml.safe_dump({"host": "localhost", "port": 27017, "name": "multi"}))
    cfg = tmp_path / "fw"
    assert main(["launchers", "init", str(cfg), "--launchpad", str(lp_file), "--cpu-multi"]) == 0
    qa_path = cfg / "cpu" / "my_qadapter.yaml"
    qa = yaml.safe_load(qa_path.read_text())
    assert qa["rocket_launch"].endswith("multi ${SLURM_CPUS_PER_TASK:-1} --nlaunches 0")
    assert "OMP_NUM_THREADS=1" in qa["pre_rocket"]
    qa["cpus_per_task"] = 2  # a 2-core "node"
    qa_path.write_text(yaml.safe_dump(qa))
    # the gpu queue keeps singleshot (reservation mode)
    assert yaml.safe_load((cfg / "gpu" / "my_qadapter.yaml").read_text())["rocket_launch"].endswith(
        "singleshot"
    )

    code = ADD.format(lp=str(cfg / "cpu" / "my_launchpad.yaml"), out=str(tmp_path))
    _, run, jobs = _slurm.qlaunch_singleshot(tmp_path, cfg / "cpu", code, server)
    out = "".join(p.read_text()[-3000:] for p in run.glob("slurm-*.out"))
    assert len(jobs) == 1 and jobs[1]["rc"] == 0, out
    start = [float((tmp_path / f"start{i}").read_text()) for i in range(2)]
    end = [float((tmp_path / f"end{i}").read_text()) for i in range(2)]
    assert max(start) < min(end), (start, end)  # both ran at once in one queue job
