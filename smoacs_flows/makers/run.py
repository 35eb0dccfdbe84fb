"""The embedded run: submit to the embedded LaunchPad, run local workers, show progress.

``run_campaign`` submits the campaign, starts one worker process per category (gpu, cpu, and
the DFT category if it is another), and polls the LaunchPad: a progress line per change
(jobs done / running / fizzled per stage), until every firework of the campaign version is
COMPLETED (done) or nothing can run any more (stuck: fizzled fireworks block the rest).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireworks import LaunchPad
from jobflow import Flow

from smoacs_flows.campaign import Campaign, load_campaign
from smoacs_flows.config import home_path
from smoacs_flows.makers.core import STAGES
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, lp_session
from smoacs_flows.makers.settings import stage_settings
from smoacs_flows.makers.submit import Submission, campaign_flow, submit

ACTIVE = {"READY", "RESERVED", "RUNNING"}


def stage_counts(lp: LaunchPad, tag: str) -> dict[str, dict[str, int]]:
    """``{stage: {state: count}}`` for the fireworks carrying ``tag`` (any LaunchPad)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with lp_session(lp, write=False):
        for d in lp.fireworks.find({"spec.tags": tag}, {"spec.stage": 1, "state": 1}):
            out[d["spec"].get("stage", "?")][d["state"]] += 1
    return {k: dict(v) for k, v in out.items()}


class StageEta:
    """The expected time left of one stage, from the rate its fireworks have completed at so
    far (parallel workers included), once two have completed after the first one seen."""

    def __init__(self, stage: str = "dft") -> None:
        self.stage = stage
        self.marks: list[tuple[float, int]] = []  # (time, completed) at each change

    def update(self, counts: dict[str, dict[str, int]], now: float) -> str:
        """`` · ~N min left`` for the stage (empty until there is a rate, or when done)."""
        c = counts.get(self.stage) or {}
        done, total = c.get("COMPLETED", 0), sum(c.values())
        if not self.marks or self.marks[-1][1] != done:
            self.marks.append((now, done))
        if total == 0 or done >= total or len(self.marks) < 3:
            return ""
        (t0, d0), (t1, d1) = self.marks[1], self.marks[-1]
        if d1 <= d0 or t1 <= t0:
            return ""
        left = (t1 - t0) / (d1 - d0) * (total - done) - (now - t1)
        return f" · {self.stage} ~{max(1, round(left / 60))} min left"


def format_progress(counts: dict[str, dict[str, int]]) -> str:
    """``propose 2/2 · prefilter 1/2 (1 running) · ...`` in stage order."""
    parts = []
    for st in [*STAGES, *sorted(set(counts) - set(STAGES))]:
        c = counts.get(st)
        if not c:
            continue
        total = sum(c.values())
        extra = []
        if c.get("RUNNING") or c.get("RESERVED"):
            extra.append(f"{c.get('RUNNING', 0) + c.get('RESERVED', 0)} running")
        if c.get("FIZZLED"):
            extra.append(f"{c['FIZZLED']} fizzled")
        parts.append(
            f"{st} {c.get('COMPLETED', 0)}/{total}" + (f" ({', '.join(extra)})" if extra else "")
        )
    return " · ".join(parts)


def fizzled_reasons(lp: LaunchPad, tag: str) -> list[str]:
    """``name (fw N): reason`` for each fizzled firework of the campaign (the reason as
    ``smoacs-flows resume`` shows it: custodian's correction and the exception's last line)."""
    from smoacs_flows.makers.recovery import failure_reason

    with lp_session(lp, write=False):
        fws = list(
            lp.fireworks.find({"spec.tags": tag, "state": "FIZZLED"}, {"fw_id": 1, "name": 1})
        )
        return [f"{fw['name']} (fw {fw['fw_id']}): {failure_reason(lp, fw['fw_id'])}" for fw in fws]


def decide(counts: dict[str, dict[str, int]]) -> str | None:
    """``done`` (every firework completed, or the summary completed and only failed DFT
    candidates are left), ``stuck`` (nothing ready or running, not done) or None (running)."""
    states: dict[str, int] = defaultdict(int)
    for c in counts.values():
        for k, v in c.items():
            states[k] += v
    total = sum(states.values())
    active = any(states.get(s) for s in ACTIVE)
    summary_done = counts.get("summary", {}).get("COMPLETED", 0) > 0
    if total and (states.get("COMPLETED", 0) == total or (summary_done and not active)):
        return "done"
    if total and not active:
        return "stuck"
    return None


@dataclass
class RunResult:
    """Outcome of an embedded run."""

    submission: Submission
    state: str  # done | stuck | timeout
    counts: dict[str, dict[str, int]]
    fizzled: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    wall_time: float = 0.0
    worker_logs: list[Path] = field(default_factory=list)


def campaign_summary(tag: str) -> dict[str, Any] | None:
    """The summary job's output of a campaign version from the JobStore (``--store`` is not
    an option of ``run``: ``$SMOACS_JOB_STORE``, jobflow's ``JOB_STORE`` or the embedded one)."""
    from smoacs_flows.stores import load_job_store

    store = load_job_store()
    store.connect()
    try:
        doc = store.query_one(
            {"metadata.stage": "summary", "metadata.tags": tag}, properties=["uuid"]
        )
        return None if doc is None else store.get_output(doc["uuid"], load=True)
    finally:
        store.close()


def run_workers(
    lp: EmbeddedLaunchPad,
    tag: str,
    categories: list[str],
    run_dir: Path,
    poll: float = 2.0,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
    t0: float | None = None,
    workers: dict[str, int] | None = None,
) -> tuple[str, list[Path]]:
    """Local worker processes on the fireworks tagged ``tag`` (one per category, or
    ``workers[category]`` of it, each with its own log and launch folder), with a progress line
    per change, until done, stuck or ``timeout``; returns (state, logs)."""
    t0 = time.monotonic() if t0 is None else t0
    cats = list(dict.fromkeys(categories))
    run_dir.mkdir(parents=True, exist_ok=True)
    alive = _hold_alive_lock(run_dir)  # while held, run_alive(run_dir) is True
    stop = run_dir / "STOP"
    stop.unlink(missing_ok=True)
    procs, logs = [], []
    slots = [
        (cat, cat if i == 1 else f"{cat}-{i}")
        for cat in cats
        for i in range(1, (workers or {}).get(cat, 1) + 1)
    ]
    group: int | None = None  # the workers' process group: the first worker's pid
    for cat, label in slots:
        log = run_dir / f"worker-{label}.log"
        logs.append(log)
        fh = open(log, "ab")  # noqa: SIM115 - closed after the process ends
        procs.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "smoacs_flows.makers.worker",
                        "--embedded",
                        str(lp.path),
                        "--category",
                        cat,
                        "--tag",
                        tag,
                        "--launch-dir",
                        str(run_dir / label),
                        "--stop-file",
                        str(stop),
                        "--parent-pid",
                        str(os.getpid()),
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    # one process group, ended as a whole; a worker also ends when this
                    # process dies, even by SIGKILL (worker.watch_parent)
                    process_group=0 if group is None else group,
                ),
                fh,
            )
        )
        group = procs[0][0].pid if group is None else group
    state, last = "timeout", ""
    ok = False
    old_term = _raise_on_sigterm()
    eta = StageEta("dft")  # GPAW/VASP dominate a campaign's wall time: say how long is left
    try:
        while True:
            counts = stage_counts(lp, tag)
            line = format_progress(counts)
            left = eta.update(counts, time.monotonic())
            if line != last:
                echo(f"[{time.monotonic() - t0:6.0f} s] {line}{left}")
                last = line
            verdict = decide(counts)
            if verdict == "stuck":
                time.sleep(poll)  # a worker may be between two launches: look again
                verdict = decide(stage_counts(lp, tag))
            if verdict:
                state = verdict
                break
            dead = [p.args[6] for p, _ in procs if p.poll() is not None]
            if dead:
                state = "stuck"
                echo(f"worker(s) {', '.join(dead)} exited; see {run_dir}")
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                break
            time.sleep(poll)
        ok = True
    finally:
        stop.touch()
        # a normal end lets each worker finish its rocket; an error, Ctrl-C or SIGTERM ends
        # them at once; either way none is left running
        _end_workers(procs, group, grace=30.0 if ok else 0.0)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        alive.close()
    return state, logs


ALIVE_LOCK = ".alive.lock"


def _hold_alive_lock(run_dir: Path) -> Any:
    """A shared lock on ``run_dir/.alive.lock``, held while this run's workers may run (the
    kernel drops it when this process dies, however it dies); returns the open file."""
    import fcntl

    fh = open(run_dir / ALIVE_LOCK, "a")  # noqa: SIM115 - closed at the end of the run
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


def run_alive(run_dir: Path) -> bool:
    """Whether a ``run``/``resume --run`` of this run folder is alive (holds its lock). When
    none is, no worker of ours can be running a firework of the campaign: its RUNNING
    fireworks were lost (their worker killed), whatever their heartbeat says."""
    import fcntl

    path = run_dir / ALIVE_LOCK
    if not path.exists():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _raise_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit(143) in this (main) thread, so ``finally`` blocks end the
    workers; returns the previous handler (None off the main thread: nothing changed)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _end_workers(
    procs: list[tuple[subprocess.Popen, Any]], group: int | None, grace: float
) -> None:
    """Wait up to ``grace`` s for the workers, then SIGTERM their process group, then SIGKILL."""
    deadline = time.monotonic() + grace
    for p, _ in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if all(p.poll() is not None for p, _ in procs):
            break
        if group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(sig)
        end = time.monotonic() + wait
        for p, _ in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, end - time.monotonic()))
    for _, fh in procs:
        fh.close()


def run_campaign(
    campaign: Campaign | str | Path,
    new_version: bool = False,
    poll: float = 2.0,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
    flow: Flow | None = None,
    cpu_workers: int = 1,
) -> RunResult:
    """Submit to the embedded LaunchPad and run local workers until done or stuck
    (``flow``: the campaign's Flow, if already built by ``submit.campaign_flow``;
    ``cpu_workers``: worker processes on the cpu category, and on the DFT one when it has its
    own: single-threaded GPAW jobs then run side by side)."""
    t0 = time.monotonic()
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    if flow is None:  # every input check before the LaunchPad is opened
        flow = campaign_flow(campaign)
    lp = EmbeddedLaunchPad()
    sub = submit(campaign, lp, new_version=new_version, flow=flow)
    cats_txt = ", ".join(f"{k or 'none'} {v}" for k, v in sorted(sub.categories.items()))
    echo(
        f"submitted {sub.campaign} v{sub.version}: {sub.n_fireworks} fireworks ({cats_txt}) "
        f"to the {sub.launchpad}"
    )
    st = stage_settings(campaign)
    cats = [st.orchestration.categories.gpu, st.orchestration.categories.cpu]
    if st.dft.category:
        cats.append(st.dft.category)
    run_dir = home_path("runs", f"{campaign.name}-v{sub.version}")
    workers = {c: cpu_workers for c in cats[1:]}  # the cpu category (and the DFT one)
    state, logs = run_workers(lp, sub.tag, cats, run_dir, poll, timeout, echo, t0, workers)
    counts = stage_counts(lp, sub.tag)
    res = RunResult(
        sub,
        state,
        counts,
        fizzled_reasons(lp, sub.tag),
        wall_time=time.monotonic() - t0,
        worker_logs=logs,
    )
    if state == "done":
        res.summary = campaign_summary(sub.tag)
    return res
