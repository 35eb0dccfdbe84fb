"""Chaos-test session figures: CLI cases tried per command (printed at the end)."""

from __future__ import annotations

import json
import os

from tests.chaos._cli import CASES

#: facts the chaos tests record (kills survived, queries answered, faults injected, ...)
FIGURES: dict[str, object] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the chaos figures; also write them to ``$SMOACS_CHAOS_REPORT`` when set."""
    if not CASES and not FIGURES:
        return
    data = {"cli_cases": dict(sorted(CASES.items())), **FIGURES}
    terminalreporter.write_line("chaos figures: " + json.dumps(data, default=str))
    path = os.environ.get("SMOACS_CHAOS_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1, default=str)


# ----------------------------------------------------------------------------- two campaigns

import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from tests.chaos._procs import cli, cli_argv, env_for, soak_campaign  # noqa: E402

#: the two campaigns run at once: the soak campaign (the kill soak's reference) and another
CONCURRENT = (("soak", 3, None), ("other", 11, "rocksalt.cif"))


@pytest.fixture(scope="session")
def concurrent_runs(tmp_path_factory):
    """Two campaigns run at once with ``smoacs-flows run`` on one embedded LaunchPad, while
    this process calls ``status`` and ``query`` (each a real process) in a loop; yields what
    every call answered and how the runs ended."""
    home = tmp_path_factory.mktemp("conc_home")
    d = tmp_path_factory.mktemp("conc")
    runs = {}
    t0 = time.monotonic()
    for name, seed, template in CONCURRENT:
        path = soak_campaign(d / f"{name}.yaml", name, seed, template)
        log = open(d / f"{name}.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            cli_argv("run", str(path), "--poll", "0.5"),
            env=env_for(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        runs[name] = (proc, log, d / f"{name}.log")
    answers: list[dict] = []
    try:
        while any(p.poll() is None for p, _, _ in runs.values()):
            for name in runs:
                t = time.monotonic() - t0
                st = cli(home, "status", name, "--json")
                q = cli(
                    home,
                    "query",
                    "--campaign",
                    name,
                    "--format",
                    "json",
                    "--limit",
                    "0",
                    "--no-update",
                )
                answers.append({"t": t, "campaign": name, "status": st, "query": q})
    finally:
        for p, log, _ in runs.values():
            try:
                p.wait(timeout=900)
            finally:
                log.close()
    duration = time.monotonic() - t0
    final = {
        name: cli(home, "query", "--campaign", name, "--format", "json", "--limit", "0")
        for name in runs
    }
    FIGURES["concurrency"] = {
        "campaigns": len(runs),
        "duration_s": round(duration, 1),
        "status_calls": len(answers),
        "query_calls": len(answers),
    }
    yield {
        "home": home,
        "runs": {n: (p.returncode, log.read_text()) for n, (p, _, log) in runs.items()},
        "answers": answers,
        "final": final,
        "duration": duration,
    }
