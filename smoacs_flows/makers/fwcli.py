"""FireWorks' own ``lpad``, ``rlaunch`` and ``qlaunch`` command lines on any LaunchPad
smoacs-flows can open, the embedded one included.

FireWorks' scripts build their LaunchPad with ``LaunchPad.from_file`` (or ``LaunchPad()`` when
no file is found), which cannot open the embedded LaunchPad: it is a locked
mongomock-persistence file, not a MongoDB host (``KeyError: 'host'``). Here the scripts run
unchanged — their parsers, their commands, FireWorks' own config-file search (``-l``, ``-c``,
``FW_CONFIG_FILE``, ``CONFIG_FILE_DIR``, ``LAUNCHPAD_LOC``) — with only that one name replaced
by :func:`~smoacs_flows.makers.launchpad.open_launchpad`: a ``my_launchpad.yaml`` with
``embedded: PATH`` opens the embedded LaunchPad, a MongoDB one opens as usual, and no file at
all means the embedded default rather than ``localhost:27017``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fireworks import LaunchPad

from smoacs_flows.errors import SmoacsError

#: tool name -> the FireWorks module holding its ``main``-like function of the same name
TOOLS = {
    "lpad": "fireworks.scripts.lpad_run",
    "rlaunch": "fireworks.scripts.rlaunch_run",
    "qlaunch": "fireworks.scripts.qlaunch_run",
}


class _Opener:
    """Opens (once) the LaunchPad a FireWorks script asks for, announcing which and why."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.lp: LaunchPad | None = None

    def __call__(self, path: str | Path | None) -> LaunchPad:
        if self.lp is not None:
            return self.lp
        from smoacs_flows.makers.discovery import (
            announce,
            find_launchpad_file,
            flush_announcements,
        )
        from smoacs_flows.makers.launchpad import describe, launchpad_from_file, resolve_launchpad

        if path is None:
            self.lp, line = resolve_launchpad(None)
        else:
            found = find_launchpad_file(None)
            same = found.path is not None and Path(found.path).resolve() == Path(path).resolve()
            why = found.why if same else f"{self.tool} -l / -c"
            self.lp = launchpad_from_file(path)
            line = f"LaunchPad: {describe(self.lp)} from {path} ({why})"
        announce(line)
        flush_announcements()  # the tool runs now, maybe for hours
        return self.lp


def _shim(opener: _Opener) -> type:
    """A stand-in for the name ``LaunchPad`` inside a FireWorks script module."""

    class LaunchPadShim:
        """``from_file(path)`` and ``LaunchPad(...)`` both return the resolved LaunchPad."""

        @staticmethod
        def from_file(path: str, *args: Any, **kwargs: Any) -> LaunchPad:
            return opener(path)

        def __new__(cls, *args: Any, **kwargs: Any) -> LaunchPad:  # type: ignore[misc]
            return opener(None)

    return LaunchPadShim


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def run_fireworks_tool(tool: str, argv: list[str]) -> int:
    """Run FireWorks' ``lpad``/``rlaunch``/``qlaunch`` with ``argv``; returns its exit code.

    FireWorks' own errors about configuration files (a missing ``-l`` file, an unreachable
    database) become one-line errors."""
    if tool not in TOOLS:
        raise SmoacsError(f"unknown FireWorks tool {tool!r} ({', '.join(TOOLS)})")
    module = importlib.import_module(TOOLS[tool])
    opener = _Opener(tool)
    if tool == "lpad":
        patch = _patched(module, "get_lp", lambda args: opener(args.launchpad_file))
    else:
        patch = _patched(module, "LaunchPad", _shim(opener))
    try:
        with patch:
            rc = getattr(module, tool)(argv)
    except (FileNotFoundError, ValueError) as exc:
        raise SmoacsError(f"{tool}: {exc}") from None
    return int(rc or 0)
