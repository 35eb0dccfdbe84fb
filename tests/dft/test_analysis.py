"""Unit tests of the half-metal analysis on model band structures (no DFT code involved)."""

from __future__ import annotations

import numpy as np
import pytest

from smoacs_flows.dft.analysis import (
    AnalysisSettings,
    analyse_spin_channels,
    dos_at_fermi,
    gaussian_dos,
)
from smoacs_flows.dft.schema import DFTResult, DOSData
from smoacs_flows.errors import InputError

EF = 5.0


def _kgrid(n: int) -> np.ndarray:
    """Fractional coordinates of an n×n×n Γ-centred mesh."""
    g = np.arange(n) / n
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def _metal_band(n: int, bottom: float, width: float) -> np.ndarray:
    """A cosine tight-binding band spanning [bottom, bottom + width], one value per k."""
    k = 2 * np.pi * _kgrid(n)
    return bottom + width * (1 - np.cos(k).sum(axis=1) / 3) / 2


def _channels(n: int, up_metal: bool, down_metal: bool, gap_edges=(EF - 0.3, EF + 0.4)):
    """(n_k, 3)-band channels: a deep band, a band at E_F (metallic or gapped), a high band."""
    out = {}
    for name, metal in (("up", up_metal), ("down", down_metal)):
        deep = np.full(n**3, EF - 4.0)
        high = np.full(n**3, EF + 3.0)
        if metal:
            mid = _metal_band(n, EF - 1.0, 2.0)  # crosses E_F
        else:
            mid = np.where(_kgrid(n)[:, 0] < 0.5, gap_edges[0] - 0.5, gap_edges[0])
            high = np.full(n**3, gap_edges[1])
        out[name] = np.stack([deep, mid, high], axis=1)
    return out


def _dos_from(eig: dict, width: float = 0.05) -> DOSData:
    e = np.linspace(EF - 6, EF + 6, 2401)
    return DOSData(
        energies=e.tolist(),
        up=gaussian_dos(eig["up"], None, e, width).tolist(),
        down=gaussian_dos(eig["down"], None, e, width).tolist(),
        method=f"gaussian {width}",
    )


def test_half_metal_model():
    eig = _channels(12, up_metal=True, down_metal=False)
    a = analyse_spin_channels(
        EF,
        eigenvalues=eig,
        dos=_dos_from(eig),
        total_moment=4.0,
        n_formula_units=1.0,
        site_moments=[3.7, 0.3, 0.0],
    )
    assert a.verdict == "half_metal"
    assert a.gapped_channel == "down"
    assert a.gaps["down"].gapped and not a.gaps["up"].gapped
    assert a.gaps["down"].gap == pytest.approx(0.7)
    # E_F - VBM = 0.3, CBM - E_F = 0.4 -> the half-metallic gap is the smaller one
    assert a.half_metallic_gap == pytest.approx(0.3)
    assert a.polarisation == pytest.approx(1.0)
    assert a.moment_per_fu == 4.0 and a.moment_integer_distance == 0.0


def test_semiconductor_and_metals():
    eig = _channels(10, up_metal=False, down_metal=False)
    a = analyse_spin_channels(EF, eigenvalues=eig, dos=_dos_from(eig), total_moment=0.0)
    assert a.verdict == "semiconductor" and a.polarisation is None
    eig = _channels(10, up_metal=True, down_metal=True)
    a = analyse_spin_channels(
        EF, eigenvalues=eig, dos=_dos_from(eig), total_moment=0.0, site_moments=[0.0]
    )
    assert a.verdict == "nonmagnetic_metal"
    assert a.polarisation == pytest.approx(0.0, abs=1e-9)
    a = analyse_spin_channels(
        EF, eigenvalues=eig, dos=_dos_from(eig), total_moment=2.2, site_moments=[2.2]
    )
    assert a.verdict == "magnetic_metal"


def test_near_half_metal_threshold_is_configurable():
    eig = _channels(12, up_metal=True, down_metal=True)
    # the down channel is metallic but with a tiny DOS at E_F
    e = np.linspace(EF - 6, EF + 6, 2401)
    up = gaussian_dos(eig["up"], None, e, 0.05)
    dos = DOSData(energies=e.tolist(), up=up.tolist(), down=(0.03 * up).tolist(), method="t")
    a = analyse_spin_channels(EF, eigenvalues=eig, dos=dos, total_moment=1.0)
    assert a.verdict == "near_half_metal" and a.polarisation > 0.9
    strict = AnalysisSettings(near_half_metal_polarisation=0.99)
    assert (
        analyse_spin_channels(
            EF, eigenvalues=eig, dos=dos, total_moment=1.0, settings=strict
        ).verdict
        == "magnetic_metal"
    )


def test_smeared_coarse_dos_pitfall_eigenvalues_decide():
    """A channel whose DOS at E_F is (numerically) zero but whose band crosses E_F is metallic.

    A narrow band crossing E_F only in a small pocket: a coarse smeared DOS misses it, the
    eigenvalues on the mesh still show a varying number of states below E_F.
    """
    n = 20
    k = _kgrid(n)
    pocket = np.linalg.norm(np.minimum(k, 1 - k), axis=1) < 0.12  # small pocket around Γ
    eig = _channels(n, up_metal=True, down_metal=False)
    mid = np.where(pocket, EF - 0.02, EF + 0.03)
    eig["down"] = np.stack([np.full(n**3, EF - 4.0), mid, np.full(n**3, EF + 3.0)], axis=1)
    # a DOS from which the pocket has been lost (as on a coarse smeared mesh)
    e = np.linspace(EF - 6, EF + 6, 2401)
    dos = DOSData(
        energies=e.tolist(),
        up=gaussian_dos(eig["up"], None, e, 0.05).tolist(),
        down=np.where(np.abs(e - EF) < 0.5, 0.0, 0.2).tolist(),
        method="smeared",
    )
    from_dos = analyse_spin_channels(EF, dos=dos, total_moment=2.2, site_moments=[2.2])
    assert from_dos.verdict == "half_metal"  # what the DOS alone would (wrongly) say
    assert any("DOS only" in w for w in from_dos.warnings)
    a = analyse_spin_channels(EF, eigenvalues=eig, dos=dos, total_moment=2.2, site_moments=[2.2])
    assert not a.gaps["down"].gapped
    assert "cross" in a.gaps["down"].reason
    assert a.verdict in {"magnetic_metal", "near_half_metal"}


def test_min_gap_threshold():
    eig = _channels(8, up_metal=True, down_metal=False, gap_edges=(EF - 0.03, EF + 0.04))
    a = analyse_spin_channels(EF, eigenvalues=eig, total_moment=1.0)
    assert not a.gaps["down"].gapped and "min_gap" in a.gaps["down"].reason
    a = analyse_spin_channels(
        EF, eigenvalues=eig, total_moment=1.0, settings=AnalysisSettings(min_gap=0.05)
    )
    assert a.verdict == "half_metal"


def test_no_spin_data_is_never_guessed():
    e = np.linspace(0, 10, 101)
    dos = DOSData(energies=e.tolist(), up=np.ones_like(e).tolist(), down=None, method="x")
    a = analyse_spin_channels(5.0, dos=dos, total_moment=None)
    assert a.verdict == "not_spin_polarised" and not a.spin_polarised
    a = analyse_spin_channels(5.0, eigenvalues={"up": np.zeros((4, 3))})
    assert a.verdict == "not_spin_polarised"
    assert analyse_spin_channels(None).verdict == "not_spin_polarised"


def test_dos_at_fermi_and_gaussian_normalisation():
    e = np.linspace(-5, 5, 2001)
    assert dos_at_fermi(e, 2 * e + 3, 0.5, 0.1) == pytest.approx(4.0)
    g = gaussian_dos(np.array([[0.0, 1.0]]), None, e, 0.1)
    assert np.trapezoid(g, e) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(InputError, match="does not contain E_F"):
        dos_at_fermi(e, e, 4.99, 0.1)


def test_result_json_roundtrip_and_bad_file(tmp_path):
    eig = _channels(6, up_metal=True, down_metal=False)
    a = analyse_spin_channels(EF, eigenvalues=eig, total_moment=3.0)
    r = DFTResult(
        engine="gpaw",
        structure={"x": 1},
        formula="A1",
        reduced_formula="A",
        n_formula_units=1,
        spin_polarised=True,
        efermi=EF,
        total_moment=3.0,
        eigenvalues={k: v.tolist() for k, v in eig.items()},
        analysis=a,
    )
    path = r.write(tmp_path / "r.json")
    back = DFTResult.read(path)
    assert back.analysis.verdict == "half_metal" and back.eigenvalues == r.eigenvalues
    bad = tmp_path / "bad.json"
    bad.write_text('{"engine": "abinit"}')
    with pytest.raises(InputError, match="bad.json: invalid DFT result field"):
        DFTResult.read(bad)
