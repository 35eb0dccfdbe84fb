"""Calling the ``smoacs-flows`` CLI in-process and judging its outcome for the chaos tests."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from smoacs_flows.cli import main

#: an ``error:`` line, ours (``error: ...``) or argparse's (``smoacs-flows query: error: ...``)
ERROR_LINE = re.compile(r"^(smoacs-flows[\w -]*: )?error: \S")


#: CLI calls per command in this session (the figures docs/reliability.md reports)
CASES: Counter[str] = Counter()


class Hang(Exception):
    """A CLI call ran past its time limit."""


@dataclass
class Outcome:
    """Exit code and captured streams of one CLI call."""

    argv: list[str]
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        """The stderr lines that report an error."""
        return [ln for ln in self.err.splitlines() if ERROR_LINE.match(ln)]


def case_key(argv: list[str]) -> str:
    """The command an argv runs (``dft run`` for the sub-commands of ``dft``)."""
    return " ".join(argv[:2]) if argv[:1] == ["dft"] else (argv[0] if argv else "")


def call(argv: list[str], limit: float = 60.0, wall_factor: float = 5.0) -> Outcome:
    """Run ``smoacs-flows ARGV`` in this process; SystemExit becomes the exit code. Any other
    exception propagates (a traceback is what the chaos tests look for); past ``limit``
    seconds of this process's CPU time, or ``wall_factor`` times that in wall time (a call
    blocked on something), the call is interrupted with :class:`Hang`. CPU time, not wall
    time, is what a loaded or slow machine stretches least."""

    def cpu(*_):
        raise Hang(f"smoacs-flows {' '.join(argv)} used over {limit:.0f} s of CPU")

    def wall(*_):
        raise Hang(f"smoacs-flows {' '.join(argv)} ran past {limit * wall_factor:.0f} s")

    CASES[case_key(argv)] += 1
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGPROF, cpu), signal.signal(signal.SIGALRM, wall)
    signal.setitimer(signal.ITIMER_PROF, limit)
    # pytest-timeout's own alarm (if any) is put back afterwards, less the time spent
    outer, t0 = signal.setitimer(signal.ITIMER_REAL, limit * wall_factor), time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old[0])
        signal.signal(signal.SIGALRM, old[1])
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer[0] - (time.monotonic() - t0), 1e-3))
    return Outcome(list(argv), int(code), out.getvalue(), err.getvalue())


def assert_clean(o: Outcome, names: tuple[str, ...] = (), allow: tuple[int, ...] = (0, 2)) -> None:
    """Exit 0 or 2, no traceback; on 2 exactly one ``error:`` line, naming one of ``names``
    (a field, option or file) when given."""
    msg = f"smoacs-flows {' '.join(o.argv)} → {o.code}\nstdout: {o.out[-2000:]}\nstderr: {o.err}"
    assert o.code in allow, msg
    assert "Traceback" not in o.err and "Traceback" not in o.out, msg
    if o.code == 2:
        lines = o.error_lines()
        assert len(lines) == 1, msg
        if names:
            low = lines[0].lower()
            named = any(n and (n.lower() in low or n.lower().rstrip("s") in low) for n in names)
            assert named, f"none of {names} named\n{msg}"


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name → bytes), for before/after comparisons."""
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }
