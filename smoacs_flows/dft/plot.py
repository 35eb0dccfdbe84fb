"""Spin-resolved DOS plot: spin up above the axis, spin down mirrored below, E_F at zero."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.errors import InputError
from smoacs_flows.io import atomic_write_bytes


def plot_spin_dos(
    result: DFTResult, path: str | Path, emin: float = -4.0, emax: float = 4.0
) -> Path:
    """Write a PNG of the spin-resolved total DOS of ``result`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dos = result.dos_data
    if dos is None:
        raise InputError(f"{result.reduced_formula}: the result has no DOS to plot")
    ef = result.efermi or 0.0
    e = np.asarray(dos.energies) - ef
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.fill_between(e, np.asarray(dos.up), color="tab:red", alpha=0.6, label="spin up")
    if dos.down is not None:
        ax.fill_between(e, -np.asarray(dos.down), color="tab:blue", alpha=0.6, label="spin down")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(0.0, color="k", ls="--", lw=0.8, label="E_F")
    ax.set_xlim(emin, emax)
    m = (e >= emin) & (e <= emax)
    up = np.asarray(dos.up)[m]
    down = np.asarray(dos.down)[m] if dos.down is not None else np.zeros(1)
    top = max(float(up.max(initial=0.0)), float(down.max(initial=0.0)), 1e-3)
    ax.set_ylim(-1.05 * top if dos.down is not None else 0.0, 1.05 * top)
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    verdict = result.analysis.verdict if result.analysis else "not analysed"
    ax.set_title(f"{result.reduced_formula} ({result.engine}): {verdict}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
