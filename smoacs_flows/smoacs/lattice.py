"""NaN-safe lattice construction from lengths and angles."""

from __future__ import annotations

import math

import torch

#: smallest allowed squared height of the third lattice vector (relative to c^2)
_MIN_CZ2 = 1e-4


def lattice_from_parameters(
    lengths: torch.Tensor, angles_deg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice matrices (B, 3, 3) (rows = vectors) from lengths (B, 3) Å and angles (B, 3) °.

    The papers report NaN lattices from a negative square-root argument when the three angles
    cannot close a cell. The argument is clamped from below, so the result is always finite;
    the second return value flags the cells where clamping happened (a degenerate cell).
    """
    a, b, c = lengths.unbind(-1)
    alpha, beta, gamma = torch.deg2rad(angles_deg).unbind(-1)
    ca, cb, cg = torch.cos(alpha), torch.cos(beta), torch.cos(gamma)
    sg = torch.sin(gamma).clamp_min(1e-6)
    cx = cb
    cy = (ca - cb * cg) / sg
    cz2 = 1.0 - cx**2 - cy**2
    degenerate = cz2 < _MIN_CZ2
    cz = torch.sqrt(cz2.clamp_min(_MIN_CZ2))
    zero = torch.zeros_like(a)
    va = torch.stack([a, zero, zero], -1)
    vb = torch.stack([b * cg, b * sg, zero], -1)
    vc = torch.stack([c * cx, c * cy, c * cz], -1)
    return torch.stack([va, vb, vc], -2), degenerate


def angles_from_unit(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map normalised angle parameters in [0, 1] to degrees in [lo, hi] (clamped)."""
    return lo + (hi - lo) * u.clamp(0.0, 1.0)


def unit_from_angles(angles: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Inverse of :func:`angles_from_unit`."""
    return (angles - lo) / (hi - lo)


def arcsine_refresh_steps(total_steps: int, count: int) -> list[int]:
    """Graph-refresh steps t_k = ceil(T · (2/π) · arcsin(k / (K + 1))), k = 1..K.

    Dense early, sparse late: the learning rate decays on a cosine, so refreshes follow its
    integral (a sine); this reproduces the seed papers' published step lists.
    """
    steps = {
        math.ceil(total_steps * (2 / math.pi) * math.asin(k / (count + 1)))
        for k in range(1, count + 1)
    }
    return sorted(s for s in steps if 0 < s < total_steps)
