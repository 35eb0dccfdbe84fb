"""Timing a bare predictor forward + backward, the denominator of the step-overhead benchmark."""

from __future__ import annotations

import statistics
import time

import torch

from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def leaf_batch(batch: SoftCrystalBatch) -> SoftCrystalBatch:
    """A copy whose lattice, coordinates and distributions are leaves that require grad."""
    return SoftCrystalBatch(
        batch.lattice.detach().clone().requires_grad_(True),
        batch.frac_coords.detach().clone().requires_grad_(True),
        batch.element_probs.detach().clone().requires_grad_(True),
        batch.crystal_index,
        batch.n_sites,
    )


def forward_backward(predictor: Predictor, batch: SoftCrystalBatch) -> torch.Tensor:
    """One bare step: ``predict`` then ``backward`` of the sum of every output; returns the loss.

    The graph is not refreshed here (call ``predictor.refresh`` first, as the engine does).
    """
    out = predictor.predict(batch)
    loss = sum(v.sum() for v in out.values())
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    return loss.detach()


def time_forward_backward(
    predictor: Predictor, batch: SoftCrystalBatch, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Wall-clock seconds of :func:`forward_backward` on ``batch`` (graph refreshed once).

    Returns ``{"median_s", "min_s", "refresh_s"}``; CUDA is synchronised around each step.
    """
    batch = leaf_batch(batch)
    device = batch.device
    t0 = time.perf_counter()
    predictor.refresh(batch)
    _sync(device)
    refresh_s = time.perf_counter() - t0
    for _ in range(warmup):
        forward_backward(predictor, batch)
    times = []
    for _ in range(repeats):
        for t in (batch.lattice, batch.frac_coords, batch.element_probs):
            t.grad = None
        _sync(device)
        t0 = time.perf_counter()
        forward_backward(predictor, batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "refresh_s": refresh_s}
