"""``device: auto`` in a gpu-queue job (the job script sets SMOACS_GPU_QUEUE) without a GPU says
so loudly on stderr; outside a gpu-queue job (a laptop) it stays quiet; ``device: cuda`` is
an error. This machine has no CUDA device (checked first)."""

from __future__ import annotations

import pytest
import torch

from smoacs_flows.errors import SpecError
from smoacs_flows.screening.relax import resolve_device as relax_device
from smoacs_flows.smoacs.propose import resolve_device

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_gpu_queue_job_without_gpu_warns(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SMOACS_GPU_QUEUE", "1")
    assert resolve_device("auto").type == "cpu"
    assert relax_device("auto") == "cpu"
    err = capsys.readouterr().err
    assert err.count("gpu-queue job found no CUDA device") == 2
    assert "SMOACS proposal" in err and "MLIP relaxation" in err


def test_quiet_outside_a_gpu_queue(monkeypatch, capsys) -> None:
    monkeypatch.delenv("SMOACS_GPU_QUEUE", raising=False)
    assert resolve_device("auto").type == "cpu"
    assert "CUDA" not in capsys.readouterr().err


def test_cuda_is_strict() -> None:
    with pytest.raises(SpecError, match="no CUDA device"):
        resolve_device("cuda")
