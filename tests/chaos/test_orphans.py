"""Issue 22: ``run``/``resume --run`` never leave worker processes behind, whichever way the
process that started them ends (SIGKILL, SIGTERM). A real driver process runs
:func:`smoacs_flows.makers.run.run_workers` over a firework that sleeps; the test kills the
driver and looks for the worker processes in ``/proc`` (the kernel's own process table)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.makers._campaign import ROOT

pytestmark = [pytest.mark.chaos, pytest.mark.skipif(sys.platform != "linux", reason="/proc")]

DRIVER = """
import sys
from pathlib import Path
from fireworks import Firework, PyTask
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.makers.run import run_workers
lp = EmbeddedLaunchPad(Path(sys.argv[1]))
spec = {"tags": ["t"], "_category": "x", "stage": "propose"}
lp.add_wf(Firework(PyTask(func="time.sleep", args=[300]), spec=spec))
print("started", flush=True)
run_workers(lp, "t", ["x", "y"], Path(sys.argv[2]), poll=0.5)
"""


def _workers(lp_path: Path) -> list[int]:
    """Pids of live worker processes on ``lp_path`` (from /proc; zombies excluded)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"smoacs_flows.makers.worker" in cmd and str(lp_path).encode() in cmd and state != "Z":
            out.append(int(d.name))
    return out


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_no_worker(tmp_path, sig) -> None:
    lp_path = tmp_path / "lp" / "fireworks.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(lp_path), str(tmp_path / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait(lambda: len(_workers(lp_path)) == 2, 120), driver.communicate()[0]
        busy = tmp_path / "run" / "x"  # the x worker takes the sleeping firework
        assert _wait(lambda: any(busy.glob("launcher_*")), 60)
        driver.send_signal(sig)
        driver.wait(timeout=60)
        assert _wait(lambda: not _workers(lp_path), 30), f"left running: {_workers(lp_path)}"
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in _workers(lp_path):
            os.kill(pid, signal.SIGKILL)
