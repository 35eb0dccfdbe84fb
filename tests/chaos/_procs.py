"""Real ``smoacs-flows`` processes for the kill-soak and concurrency tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from tests.makers._campaign import CHEAP_STAGES, ROOT, tiny_campaign, write_campaign

#: stages in the order a campaign passes them; "build" is the results-store build
STAGE_ORDER = ["propose", "prefilter", "relax", "sun", "dft", "summary", "build"]


def env_for(home: Path) -> dict[str, str]:
    """The environment of a CLI process: this checkout first, its own SMOACS_HOME."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(PYTHONPATH=str(ROOT), SMOACS_HOME=str(home), OMP_NUM_THREADS="1")
    return env


def cli_argv(*args: str) -> list[str]:
    """``smoacs-flows ARGS`` as a command line of this interpreter."""
    return [sys.executable, "-m", "smoacs_flows.cli", *args]


def cli(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``smoacs-flows ARGS`` to its end in a real process."""
    return subprocess.run(
        cli_argv(*args), env=env_for(home), capture_output=True, text=True, timeout=timeout
    )


def soak_campaign(path: Path, name: str = "soak", seed: int = 3, template: str | None = None):
    """The cheap campaign (4 candidates in 2 batches, CHGNet, one Γ-only GPAW candidate)."""
    kw = {"template": template} if template else {}
    data = tiny_campaign(name=name, n=4, batch=2, stages=CHEAP_STAGES, **kw)
    data["seed"] = seed
    return write_campaign(path, data)


def children(pid: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of the live child processes of ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                argv = (d / "cmdline").read_bytes().decode().split("\0")
                out.append((int(d.name), [a for a in argv if a]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def worker_pids(pid: int) -> dict[str, int]:
    """``{category: pid}`` of the worker processes started by ``smoacs-flows`` process pid."""
    out = {}
    for cpid, argv in children(pid):
        if "smoacs_flows.makers.worker" in argv and "--category" in argv:
            out[argv[argv.index("--category") + 1]] = cpid
    return out


def fireworks(home: Path) -> list[dict[str, Any]]:
    """Every firework document on the embedded LaunchPad of ``home`` (read-only session)."""
    path = home / "launchpad" / "fireworks.json"
    if not path.exists():
        return []
    lp = EmbeddedLaunchPad(path)
    with lp.session(write=False):
        return list(
            lp.fireworks.find(
                {}, {"fw_id": 1, "name": 1, "state": 1, "spec.stage": 1, "spec._category": 1}
            )
        )


def launches(home: Path) -> tuple[list[dict], list[dict]]:
    """(fireworks with launches, launches) on the embedded LaunchPad of ``home``."""
    lp = EmbeddedLaunchPad(home / "launchpad" / "fireworks.json")
    with lp.session(write=False):
        fws = list(lp.fireworks.find({}))
        lnc = list(lp.launches.find({}, {"launch_id": 1, "fw_id": 1, "state": 1}))
    return fws, lnc


def candidates(home: Path, campaign: str) -> list[dict[str, Any]]:
    """The candidates of a campaign as ``query --format json`` prints them (builder first)."""
    r = cli(home, "query", "--campaign", campaign, "--format", "json", "--limit", "0")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


#: the facts of a candidate an uninterrupted run must reproduce
FACTS = ("candidate_id", "formula", "stage", "state", "unique", "sun", "verdict", "natoms")


def facts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{candidate_id: the compared facts}``, energies rounded to 1 meV/atom."""
    out = {}
    for r in rows:
        f = {k: r.get(k) for k in FACTS}
        e = r.get("mlip_energy_per_atom")
        f["mlip_energy_per_atom"] = None if e is None else round(e, 3)
        out[r["candidate_id"]] = f
    return out
