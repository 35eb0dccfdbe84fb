"""PBS at parity with SLURM: ``launchers init --scheduler pbs`` for PBS Pro and Torque, run by
FireWorks' queue launcher (``qlaunch -c DIR/<queue>``: the per-queue folders with FireWorks'
standard file names) against a stand-in ``qsub``/``qstat`` whose jobs start with a clean
environment. The GPU request, the walltime format and the job's own environment (the venv,
SMOACS_HOME, FW_CONFIG_FILE) are read from the job scripts qsub received."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fireworks import Firework, ScriptTask

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.makers.recovery import parse_walltime
from tests.makers import _pbs


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FW_", "JOBFLOW_"))}
    env["PATH"] = f"{tmp / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    env["STANDIN_PBS_DIR"] = str(tmp / "pbs")
    return env


def _qlaunch(tmp: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    work = tmp / "launch"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "smoacs_flows.cli", "qlaunch", "-c", str(folder), *args],
        cwd=work,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("flavour", ["pro", "torque"])
def test_pbs_jobs_run_with_a_clean_environment(tmp_path, monkeypatch, flavour) -> None:
    from smoacs_flows.cli import main

    _pbs.install(tmp_path / "bin", tmp_path / "pbs")
    marker = tmp_path / "ran.txt"
    lp = EmbeddedLaunchPad()
    with lp.session():
        fw = Firework(
            ScriptTask.from_str(f"echo $SMOACS_HOME > {marker}"),
            spec={"_category": "cpu", "_queueadapter": {"walltime": parse_walltime("90")}},
            name="tiny",
        )
        lp.add_wf(fw)
        lp.add_wf(Firework(ScriptTask.from_str("true"), spec={"_category": "gpu"}, name="g"))
    cfg = tmp_path / "fw"
    argv = ["launchers", "init", str(cfg), "--embedded", "--scheduler", "pbs"]
    assert main([*argv, "--pbs-flavour", flavour]) == 0
    # reservation mode: the firework's own _queueadapter (resume --walltime) reaches qsub
    out = _qlaunch(tmp_path, cfg / "cpu", "-r", "singleshot")
    assert out.returncode == 0, out.stderr
    out = _qlaunch(tmp_path, cfg / "gpu", "singleshot")
    assert out.returncode == 0, out.stderr
    _pbs.wait_all(tmp_path / "pbs")
    jobs = _pbs.jobs(tmp_path / "pbs")
    cpu = next(j for j in jobs.values() if j["queue"] == "cpu")
    gpu = next(j for j in jobs.values() if j["queue"] == "gpu")
    assert cpu["rc"] == 0 and gpu["rc"] == 0, jobs
    assert marker.read_text().strip() == os.environ["SMOACS_HOME"]  # set by pre_rocket
    with lp.session(write=False):
        assert lp.fireworks.find_one({"name": "tiny"})["state"] == "COMPLETED"
    assert "#PBS -l walltime=01:30:00" in cpu["script"]  # 90 minutes, not 90 seconds
    if flavour == "pro":
        assert "#PBS -l select=1:ncpus=16:mpiprocs=1:mem=64gb" in cpu["script"]
        assert "#PBS -l select=1:ncpus=8:mpiprocs=1:ngpus=1:mem=32gb" in gpu["script"]
    else:
        assert "#PBS -l nodes=1:ppn=16" in cpu["script"]
        assert "#PBS -l nodes=1:ppn=8:gpus=1" in gpu["script"]
    assert "export SMOACS_GPU_QUEUE=1" in gpu["script"]


@pytest.mark.parametrize(
    ("given", "written"),
    [("90", "01:30:00"), ("1:30:00", "01:30:00"), ("2-00:00:00", "48:00:00"), ("45", "00:45:00")],
)
def test_walltime_formats(given, written) -> None:
    assert parse_walltime(given) == written


@pytest.mark.parametrize("bad", ["-5", "0", "1:75:00", "1h", "1-2", ""])
def test_bad_walltimes(bad) -> None:
    from smoacs_flows.errors import SmoacsError

    with pytest.raises(SmoacsError, match="--walltime"):
        parse_walltime(bad)


def test_vasp_adapters_launch_one_rank_per_core(tmp_path) -> None:
    from fireworks.utilities.fw_serializers import load_object_from_file

    from smoacs_flows.cli import main

    for sched, flav, expect in (
        ("slurm", "pro", 'ATOMATE2_VASP_CMD="srun vasp_std"'),
        ("pbs", "pro", "mpiexec -n $(wc -l < $PBS_NODEFILE) vasp_std"),
        ("pbs", "torque", "mpiexec -n $(wc -l < $PBS_NODEFILE) vasp_std"),
    ):
        d = tmp_path / f"{sched}-{flav}"
        argv = ["launchers", "init", str(d), "--scheduler", sched, "--pbs-flavour", flav]
        assert main(argv) == 0
        script = load_object_from_file(str(d / "vasp" / "my_qadapter.yaml")).get_script_str(".")
        assert expect in script, (sched, flav, script)
        queues = {
            q: load_object_from_file(str(d / q / "my_qadapter.yaml"))["queue"]
            for q in ("gpu", "cpu", "vasp")
        }
        assert len(set(queues.values())) == 3  # qlaunch -m counts each kind apart
        if sched == "pbs" and flav == "pro":
            assert "mpiprocs=32" in script
