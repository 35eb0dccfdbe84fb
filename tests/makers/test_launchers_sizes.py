"""``launchers init --walltime`` and ``--queues``: one walltime input format for every queue
(``[D-]HH:MM:SS`` or whole minutes, as ``resume --walltime``) written as both schedulers read
it, and one queue name per kind; read back from the job scripts FireWorks' own adapters make."""

from __future__ import annotations

import pytest
from fireworks.utilities.fw_serializers import load_object_from_file

from smoacs_flows.cli import main


def _script(folder, queue: str) -> str:
    """The job script of a queue's adapter (the per-queue folder's, as qlaunch -c reads it)."""
    return load_object_from_file(str(folder / queue / "my_qadapter.yaml")).get_script_str(".")


@pytest.mark.parametrize(
    ("scheduler", "time", "part"),
    [
        ("pbs", "#PBS -l walltime=", "#PBS -q "),
        ("slurm", "#SBATCH --time=", "#SBATCH --partition="),
    ],
)
def test_walltimes_and_queue_names_per_kind(tmp_path, scheduler, time, part, capsys):
    d = tmp_path / "fw"
    argv = ["launchers", "init", str(d), "--embedded", "--scheduler", scheduler]
    argv += ["--walltime", "vasp=2-00:00:00,gpu=90", "--queues", "vasp=mpi,gpu=gpu_a100"]
    assert main(argv) == 0
    gpu, cpu, vasp = (_script(d, q) for q in ("gpu", "cpu", "vasp"))
    assert f"{time}48:00:00" in vasp and f"{part}mpi\n" in vasp  # 2 days, in HH:MM:SS
    assert f"{time}01:30:00" in gpu and f"{part}gpu_a100\n" in gpu  # 90 minutes
    assert f"{time}12:00:00" in cpu and f"{part}cpu\n" in cpu  # the defaults
    top = load_object_from_file(str(d / "my_qadapter_vasp.yaml"))
    assert top["walltime"] == "48:00:00" and top["queue"] == "mpi"


@pytest.mark.parametrize(
    ("option", "value", "msg"),
    [
        ("--walltime", "gpu=1-2", "--walltime gpu=1-2: expected"),
        ("--walltime", "gpu=0", "--walltime gpu=0: must be longer than zero"),
        ("--walltime", "lsf=1:00:00", "QUEUE one of gpu, cpu, vasp"),
        ("--queues", "gpu=a b", "not a queue name"),
        ("--queues", "vasp", "expected QUEUE=VALUE"),
    ],
)
def test_bad_sizes_write_nothing(tmp_path, option, value, msg, capsys):
    d = tmp_path / "fw"
    assert main(["launchers", "init", str(d), "--embedded", option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
    assert not d.exists()
