"""Shared by the benchmarks: machine/thread facts and atomic JSON results under results/."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from smoacs_flows.io import atomic_write_bytes  # noqa: E402

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children, all threads."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def _python() -> str:
    """How the command line names the interpreter: the project venv's, else python3."""
    venv = ROOT / ".venv"
    return ".venv/bin/python" if Path(sys.prefix) in (venv, venv.resolve()) else "python3"


def machine(torch_threads: int | None = None) -> dict:
    """What the numbers ran on: cores, load averages, thread settings, commit, command.

    The commit is ``$BENCH_COMMIT`` when set (the device scripts set it from the stamp written
    here before the call: a copied tree's git metadata can be stale), else git's HEAD."""
    commit = os.environ.get("BENCH_COMMIT", "").strip()
    try:
        commit = (
            commit
            or subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        commit = ""
    info = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [_python(), *sys.argv]),
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1_5_15": list(os.getloadavg()),
        "env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
    }
    if torch_threads is not None:
        info["torch_num_threads"] = torch_threads
    return info


def gpu_info() -> dict | None:
    """The CUDA device this process used (name, memory, torch/CUDA versions), else None."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is None or not torch.cuda.is_initialized():
        return None
    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    return {
        "name": torch.cuda.get_device_name(dev),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": list(torch.cuda.get_device_capability(dev)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def write_result(name: str, data: dict) -> Path:
    """Write ``data`` to benchmarks/results/NAME.json atomically (``$BENCH_RESULTS`` overrides
    the folder); the GPU's name goes under ``machine`` when CUDA was used. Returns the path."""
    gpu = gpu_info()
    if gpu is not None and isinstance(data.get("machine"), dict):
        data["machine"]["gpu"] = gpu
    path = Path(os.environ.get("BENCH_RESULTS") or RESULTS) / f"{name}.json"
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())
    return path
