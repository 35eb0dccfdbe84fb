"""Environment helpers for module-scoped fixtures (the function-scoped ``monkeypatch`` is not
available to them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def with_smoacs_home(home: Path) -> Iterator[Path]:
    """``SMOACS_HOME`` set to ``home`` inside the block, restored (or unset) after it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMOACS_HOME", str(home))
        yield home
