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
