"""Half-metal analysis of a spin-resolved calculation.

Per-spin gaps are decided from **eigenvalues on a uniform mesh**, never from a smeared DOS alone:
a smeared DOS on a coarse mesh makes bcc Fe look half-metallic (its minority DOS at E_F comes
out zero), while its dense-mesh eigenvalues have minority states within a few 10 meV on both
sides of E_F. A channel is *gapped* when

1. no band crosses E_F: every k-point has the same number of eigenvalues below E_F, and
2. the gap CBM − VBM (lowest eigenvalue above E_F minus highest below, over all k) is at least
   ``min_gap``.

Verdicts (thresholds in :class:`AnalysisSettings`):

P = (N↑ − N↓)/(N↑ + N↓) uses N(E_F) from the DOS, with N = 0 for a channel gapped by its
eigenvalues (P = ±1 for a half-metal; undefined, None, for a semiconductor).

- ``not_spin_polarised``: no spin-down channel (ISPIN=1, a DOS without spin) — never guessed.
- ``semiconductor``: both channels gapped.
- ``half_metal``: exactly one channel gapped, the other metallic at E_F.
- ``near_half_metal``: both metallic, ``|P| >= near_half_metal_polarisation`` (default 0.9).
- ``magnetic_metal``: both metallic, |moment per f.u.| or some |site moment| >= ``magnetic_moment``.
- ``nonmagnetic_metal``: both metallic otherwise.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from smoacs_flows.dft.dos import dos_data
from smoacs_flows.dft.schema import DOSData, HalfMetalAnalysis, MSONableModel, SpinGap, Verdict
from smoacs_flows.errors import InputError

VERDICTS: tuple[str, ...] = typing.get_args(Verdict)


class AnalysisSettings(MSONableModel):
    """Thresholds of the half-metal analysis (all energies in eV, moments in μB)."""

    model_config = ConfigDict(allow_inf_nan=False)

    min_gap: float = Field(0.1, gt=0, description="smallest CBM-VBM that counts as a gap")
    fermi_window: float = Field(
        0.05, gt=0, description="N(E_F) = mean DOS over [E_F - w, E_F + w] per spin"
    )
    occupation_tolerance: float = Field(
        1e-4, ge=0, description="eigenvalues up to E_F + tol count as below E_F"
    )
    near_half_metal_polarisation: float = Field(0.9, gt=0, le=1)
    magnetic_moment: float = Field(
        0.1, gt=0, description="|moment/f.u.| or any |site moment| above this = magnetic"
    )
    dos_zero: float = Field(1e-3, ge=0, description="DOS below this (states/eV/cell) is zero")
    min_kpoints: int = Field(
        20, ge=1, description="fewer irreducible k-points than this gives a warning"
    )


def _spin_gap_from_eigenvalues(
    spin: str, eig: np.ndarray, efermi: float, settings: AnalysisSettings
) -> SpinGap:
    """Gap of one channel from eigenvalues ``eig`` of shape (n_kpoints, n_bands)."""
    eig = np.asarray(eig, dtype=float)
    if eig.ndim != 2 or eig.size == 0:
        raise InputError(f"eigenvalues of spin {spin}: expected a (k-points, bands) array")
    below = eig <= efermi + settings.occupation_tolerance
    n_below = below.sum(axis=1)
    vbm = float(eig[below].max()) if below.any() else None
    cbm = float(eig[~below].min()) if (~below).any() else None
    if n_below.min() != n_below.max():
        return SpinGap(
            spin=spin,
            gapped=False,
            vbm=vbm,
            cbm=cbm,
            source="eigenvalues",
            reason=f"bands cross E_F ({int(n_below.min())}-{int(n_below.max())} states below "
            "E_F per k-point)",
        )
    if vbm is None or cbm is None:
        return SpinGap(
            spin=spin,
            gapped=False,
            vbm=vbm,
            cbm=cbm,
            source="eigenvalues",
            reason="E_F outside the computed bands",
        )
    gap = cbm - vbm
    if gap < settings.min_gap:
        return SpinGap(
            spin=spin,
            gapped=False,
            vbm=vbm,
            cbm=cbm,
            source="eigenvalues",
            reason=f"CBM-VBM = {gap:.3f} eV < min_gap {settings.min_gap} eV",
        )
    return SpinGap(
        spin=spin,
        gapped=True,
        vbm=vbm,
        cbm=cbm,
        gap=gap,
        source="eigenvalues",
        reason=f"no band crosses E_F; CBM-VBM = {gap:.3f} eV",
    )


def _spin_gap_from_dos(
    spin: str, energies: np.ndarray, dos: np.ndarray, efermi: float, settings: AnalysisSettings
) -> SpinGap:
    """Gap of one channel from a DOS: the zero-DOS interval containing E_F."""
    occupied = dos > settings.dos_zero
    if not occupied.any():
        return SpinGap(spin=spin, gapped=False, source="dos", reason="the DOS is zero everywhere")
    i_f = int(np.searchsorted(energies, efermi))
    lo = np.nonzero(occupied[:i_f])[0]
    hi = np.nonzero(occupied[i_f:])[0]
    vbm = float(energies[lo[-1]]) if lo.size else None
    cbm = float(energies[i_f + hi[0]]) if hi.size else None
    if vbm is None or cbm is None:
        return SpinGap(
            spin=spin,
            gapped=False,
            vbm=vbm,
            cbm=cbm,
            source="dos",
            reason="E_F at the edge of the DOS energy range",
        )
    gap = cbm - vbm
    gapped = gap >= settings.min_gap
    return SpinGap(
        spin=spin,
        gapped=gapped,
        vbm=vbm,
        cbm=cbm,
        gap=gap if gapped else None,
        source="dos",
        reason=f"zero-DOS interval around E_F = {gap:.3f} eV (from the DOS only)",
    )


def dos_at_fermi(
    energies: Sequence[float], dos: Sequence[float], efermi: float, window: float
) -> float:
    """Mean DOS over [E_F - window, E_F + window] (trapezoidal; interpolated at the ends)."""
    e = np.asarray(energies, dtype=float)
    d = np.asarray(dos, dtype=float)
    lo, hi = efermi - window, efermi + window
    if lo < e[0] or hi > e[-1]:
        raise InputError(
            f"DOS energy range [{e[0]:.2f}, {e[-1]:.2f}] eV does not contain E_F ± {window} eV"
        )
    inside = (e > lo) & (e < hi)
    grid = np.concatenate([[lo], e[inside], [hi]])
    vals = np.interp(grid, e, d)
    return float(np.trapezoid(vals, grid) / (hi - lo))


def gaussian_dos(
    eigenvalues: np.ndarray, weights: np.ndarray | None, energies: np.ndarray, width: float
) -> np.ndarray:
    """Gaussian-broadened DOS of one channel (states/eV/cell; weights sum to 1)."""
    eig = np.asarray(eigenvalues, dtype=float)
    nk = eig.shape[0]
    w = np.full(nk, 1.0 / nk) if weights is None else np.asarray(weights, float) / np.sum(weights)
    out = np.zeros_like(energies, dtype=float)
    for k in range(nk):
        x = (energies[:, None] - eig[k][None, :]) / width
        out += w[k] * np.exp(-(x**2)).sum(axis=1)
    return out / (np.sqrt(np.pi) * width)


def analyse_spin_channels(
    efermi: float | None,
    *,
    eigenvalues: Mapping[str, Any] | None = None,
    dos: DOSData | Any = None,
    total_moment: float | None = None,
    n_formula_units: float = 1.0,
    site_moments: Sequence[float] | None = None,
    n_kpoints: int | None = None,
    settings: AnalysisSettings | None = None,
) -> HalfMetalAnalysis:
    """Classify a calculation: per-spin gaps, P at E_F, moment per f.u. and the verdict.

    ``eigenvalues`` maps ``"up"``/``"down"`` to (k-points, bands) arrays (absolute eV), ideally
    from a dense uniform mesh; ``dos`` (a pymatgen ``Dos``/``CompleteDos`` or
    :class:`DOSData`) gives N(E_F). Without a spin-down channel in either, the
    verdict is ``not_spin_polarised``. Without eigenvalues, gaps come from the DOS and a warning
    says so.
    """
    settings = settings or AnalysisSettings()
    dos = dos_data(dos)
    warnings: list[str] = []
    moment_fu = None if total_moment is None else float(total_moment) / n_formula_units
    common: dict[str, Any] = {
        "efermi": efermi,
        "moment_per_fu": moment_fu,
        "moment_integer_distance": None
        if moment_fu is None
        else abs(abs(moment_fu) - round(abs(moment_fu))),
        "settings": settings.model_dump(),
    }
    has_eig_down = eigenvalues is not None and eigenvalues.get("down") is not None
    has_dos_down = dos is not None and dos.down is not None
    if not (has_eig_down or has_dos_down):
        why = "no spin-down channel (ISPIN=1 or a DOS without spin)"
        return HalfMetalAnalysis(
            verdict="not_spin_polarised", spin_polarised=False, warnings=[why], **common
        )
    if efermi is None:
        raise InputError("the calculation has no Fermi level; cannot analyse spin channels")

    gaps: dict[str, SpinGap] = {}
    if eigenvalues is not None and has_eig_down:
        for spin in ("up", "down"):
            gaps[spin] = _spin_gap_from_eigenvalues(spin, eigenvalues[spin], efermi, settings)
        nk = n_kpoints or np.asarray(eigenvalues["up"]).shape[0]
        if nk < settings.min_kpoints:
            warnings.append(
                f"only {nk} k-point(s): eigenvalue gaps need a dense uniform mesh to be reliable"
            )
    else:
        e = np.asarray(dos.energies)
        for spin, d in (("up", dos.up), ("down", dos.down)):
            gaps[spin] = _spin_gap_from_dos(spin, e, np.asarray(d), efermi, settings)
        warnings.append("no eigenvalues: per-spin gaps decided from the DOS only")

    # N(E_F) per spin from the DOS, or a narrow Gaussian DOS of the eigenvalues
    n_up = n_dn = None
    if dos is not None and dos.down is not None:
        n_up = dos_at_fermi(dos.energies, dos.up, efermi, settings.fermi_window)
        n_dn = dos_at_fermi(dos.energies, dos.down, efermi, settings.fermi_window)
    elif eigenvalues is not None:
        grid = np.linspace(efermi - settings.fermi_window, efermi + settings.fermi_window, 21)
        n_up, n_dn = (
            float(
                np.mean(gaussian_dos(np.asarray(eigenvalues[s]), None, grid, settings.fermi_window))
            )
            for s in ("up", "down")
        )
    # a channel gapped by its eigenvalues has no states at E_F (a smeared DOS may show tails)
    n_up_p = 0.0 if gaps["up"].gapped else n_up
    n_dn_p = 0.0 if gaps["down"].gapped else n_dn
    polarisation = None
    if n_up_p is not None and n_dn_p is not None and (n_up_p + n_dn_p) > settings.dos_zero:
        polarisation = (n_up_p - n_dn_p) / (n_up_p + n_dn_p)

    site_max = max((abs(m) for m in site_moments), default=0.0) if site_moments else 0.0
    magnetic = (moment_fu is not None and abs(moment_fu) >= settings.magnetic_moment) or (
        site_max >= settings.magnetic_moment
    )

    gapped = [s for s in ("up", "down") if gaps[s].gapped]
    gapped_channel = None
    hm_gap = None
    if len(gapped) == 2:
        verdict = "semiconductor"
    elif len(gapped) == 1:
        verdict = "half_metal"
        gapped_channel = gapped[0]
        g = gaps[gapped_channel]
        hm_gap = min(g.cbm - efermi, efermi - g.vbm)
    elif polarisation is not None and abs(polarisation) >= settings.near_half_metal_polarisation:
        verdict = "near_half_metal"
    elif magnetic:
        verdict = "magnetic_metal"
    else:
        verdict = "nonmagnetic_metal"

    return HalfMetalAnalysis(
        verdict=verdict,
        spin_polarised=True,
        dos_at_ef={"up": n_up, "down": n_dn},
        polarisation=polarisation,
        gaps=gaps,
        gapped_channel=gapped_channel,
        half_metallic_gap=hm_gap,
        magnetic=magnetic,
        warnings=warnings,
        **common,
    )
