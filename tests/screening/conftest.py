"""Fixtures for the screening tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def smoacs_home(tmp_path, monkeypatch):
    """Point $SMOACS_HOME at a fresh temporary directory."""
    home = tmp_path / "smoacs_home"
    monkeypatch.setenv("SMOACS_HOME", str(home))
    return home
