"""Process-wide settings: where embedded state lives."""

from __future__ import annotations

import os
from pathlib import Path


def smoacs_home() -> Path:
    """The directory for embedded stores and caches: ``$SMOACS_HOME`` or ``~/.smoacs``.

    Created on demand.
    """
    home = Path(os.environ.get("SMOACS_HOME") or Path.home() / ".smoacs").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_path(*parts: str) -> Path:
    """A path under :func:`smoacs_home` (its parent folders created): e.g. ``home_path("runs")``."""
    p = smoacs_home().joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
