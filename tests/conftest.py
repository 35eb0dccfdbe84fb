"""Shared test fixtures: paths to the real data in ../shared and an isolated SMOACS_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (../shared/data beside the project root)."""
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder {SHARED} is missing (it sits beside the project root)")
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own SMOACS_HOME so no embedded state leaks between tests, and no
    FireWorks / jobflow / smoacs configuration of the machine (discovery would find it)."""
    monkeypatch.setenv("SMOACS_HOME", str(tmp_path_factory.mktemp("smoacs_home")))
    for var in (
        "FW_CONFIG_FILE",
        "JOBFLOW_CONFIG_FILE",
        "JOBFLOW_JOB_STORE",
        "SMOACS_JOB_STORE",
        "SMOACS_RESULTS_STORE",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module (small graphs run fastest so, and the CI cores are
    shared); the previous count restored after. Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
