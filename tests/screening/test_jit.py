"""Compiled kernels still load where numba cannot write its cache (read-only install/home)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, decorator: str) -> subprocess.CompletedProcess:
    """Import a module whose kernel uses ``decorator`` with every numba cache location
    blocked: its ``__pycache__`` is a file, and NUMBA_CACHE_DIR / XDG_CACHE_HOME / HOME
    point below a file."""
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    (mod / "kern.py").write_text(
        textwrap.dedent(
            f"""
            from numba import njit
            from smoacs_flows.screening.jit import cached_njit

            @{decorator}
            def square(x):
                return x * x
            """
        )
    )
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{mod}{os.pathsep}{ROOT}",
        NUMBA_CACHE_DIR=str(blocker / "numba"),
        XDG_CACHE_HOME=str(blocker / "xdg"),
        HOME=str(blocker / "home"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    code = "import kern; print(kern.square(7))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_plain_cached_njit_fails_there(tmp_path):
    """The environment reproduces numba's failure (so the next test means something)."""
    got = _run(tmp_path, "njit(cache=True)")
    assert got.returncode != 0
    assert "cannot cache function" in got.stderr


def test_cached_njit_compiles_in_memory_there(tmp_path):
    got = _run(tmp_path, "cached_njit")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "49"
