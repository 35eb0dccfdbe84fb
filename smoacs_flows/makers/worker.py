"""A local FireWorks worker for one category: ``python -m smoacs_flows.makers.worker``.

It runs rockets (``rapidfire``) for fireworks of its category, optionally restricted to one
campaign tag, until a stop file appears, or (``--until-idle``) until nothing of its category
is ready to run. The embedded run starts one per category; tests start them as real processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from fireworks import FWorker, LaunchPad

from smoacs_flows.makers.discovery import LAUNCHPAD_HELP
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, open_launchpad


def make_fworker(category: str, tag: str | None = None) -> FWorker:
    """An FWorker for ``category``, restricted to fireworks tagged ``tag`` when given."""
    query = {"spec.tags": tag} if tag else {}
    return FWorker(name=f"smoacs-{category}", category=category, query=query)


def work(
    lp: LaunchPad,
    category: str,
    launch_dir: Path,
    tag: str | None = None,
    stop_file: Path | None = None,
    until_idle: bool = False,
    poll: float = 0.5,
    timeout: float | None = None,
) -> int:
    """Run rockets until stopped; returns the number of rockets launched."""
    from fireworks.core.rocket_launcher import launch_rocket
    from fireworks.utilities.fw_utilities import create_datestamp_dir, get_fw_logger

    fworker = make_fworker(category, tag)
    launch_dir.mkdir(parents=True, exist_ok=True)
    logger = get_fw_logger("rocket.launcher", stream_level="ERROR")
    n = 0
    t0 = time.monotonic()
    while True:
        if stop_file is not None and stop_file.exists():
            break
        if timeout is not None and time.monotonic() - t0 > timeout:
            break
        if lp.run_exists(fworker):
            d = create_datestamp_dir(str(launch_dir), logger, prefix="launcher_")
            os.chdir(d)
            try:
                if launch_rocket(lp, fworker, strm_lvl="ERROR"):
                    n += 1
            finally:
                os.chdir(launch_dir)
            continue
        if until_idle:
            break
        time.sleep(poll)
    return n


def watch_parent(parent: int, poll: float = 1.0) -> None:
    """End this worker when ``parent`` (the ``run`` that started it) dies, even by SIGKILL:
    Linux's PR_SET_PDEATHSIG sends SIGTERM at once; a daemon thread polling the parent pid
    covers other systems and a parent that died before the signal was set."""
    import ctypes
    import threading

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def check() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(143)

    threading.Thread(target=check, name="watch-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of a worker process."""
    p = argparse.ArgumentParser(prog="python -m smoacs_flows.makers.worker")
    p.add_argument("--launchpad", default=None, help=LAUNCHPAD_HELP)
    p.add_argument("--embedded", default=None, help="path of an embedded LaunchPad file")
    p.add_argument("--category", required=True)
    p.add_argument("--tag", default=None, help="only fireworks with this tag")
    p.add_argument("--launch-dir", default=".", help="where launcher_* folders go")
    p.add_argument("--stop-file", default=None)
    p.add_argument("--until-idle", action="store_true")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--parent-pid", type=int, default=None, help="end when this process ends")
    args = p.parse_args(argv)
    if args.parent_pid is not None:
        watch_parent(args.parent_pid)
    lp = EmbeddedLaunchPad(args.embedded) if args.embedded else open_launchpad(args.launchpad)
    n = work(
        lp,
        args.category,
        Path(args.launch_dir).resolve(),
        args.tag,
        Path(args.stop_file) if args.stop_file else None,
        args.until_idle,
        timeout=args.timeout,
    )
    print(f"worker {args.category}: {n} rockets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
