"""Real GPAW calculations (PBE, the default GPAWSettings): NiMnSb, bcc Fe, Si.

Slow (minutes on 2 cores) but run in CI. Nothing is cached between runs.
"""

from __future__ import annotations

import json

import pytest

from smoacs_flows.cli import main
from smoacs_flows.dft.gpaw_engine import GPAWSettings, run_gpaw
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.errors import InputError
from tests.dft.gpaw_structures import bcc_fe, diamond_si, nimnsb


@pytest.mark.slow
def test_nimnsb_is_half_metal_with_4_muB(tmp_path):
    r = run_gpaw(nimnsb(), GPAWSettings(), work_dir=tmp_path / "gpaw")
    a = r.analysis
    assert a.verdict == "half_metal", a.model_dump()
    assert a.gapped_channel == "down"  # minority-spin gap (Slater-Pauling half-Heusler)
    assert r.moment_per_fu == pytest.approx(4.0, abs=0.1)
    assert a.moment_integer_distance < 0.05
    assert a.gaps["down"].gap > 0.3 and a.half_metallic_gap > 0.0
    assert a.polarisation == pytest.approx(1.0)
    mn = [
        m
        for m, s in zip(r.site_moments, r.structure["sites"])
        if s["species"][0]["element"] == "Mn"
    ]
    assert mn[0] > 3.0  # the moment sits on Mn
    assert r.hull["comparable_to_mp"] is False


@pytest.mark.slow
def test_bcc_fe_is_magnetic_metal(tmp_path):
    r = run_gpaw(bcc_fe(), GPAWSettings(), work_dir=tmp_path / "gpaw")
    a = r.analysis
    assert a.verdict == "magnetic_metal", a.model_dump()
    assert r.total_moment == pytest.approx(2.2, abs=0.15)  # PBE, experimental a
    assert r.site_moments[0] == pytest.approx(2.2, abs=0.15)
    assert 0.0 < a.polarisation < 0.9  # majority-dominated at E_F, far from half-metallic
    # both channels metallic from the dense-mesh eigenvalues (the smeared-DOS pitfall)
    assert not a.gaps["up"].gapped and not a.gaps["down"].gapped
    assert "cross" in a.gaps["down"].reason


@pytest.mark.slow
def test_si_semiconductor_through_the_cli(tmp_path, capsys):
    cif = tmp_path / "Si.cif"
    diamond_si().to(filename=str(cif))
    out = tmp_path / "out"
    assert main(["dft", "run", str(cif), "--engine", "gpaw", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "semiconductor" in table
    r = DFTResult.read(out / "result.json")
    assert r.engine == "gpaw" and r.analysis.verdict == "semiconductor"
    assert abs(r.total_moment) < 0.01
    gap = min(r.analysis.gaps["up"].gap, r.analysis.gaps["down"].gap)
    assert 0.3 < gap < 1.0  # PBE underestimates Si's 1.17 eV gap
    assert (out / "dos.png").read_bytes()[:4] == b"\x89PNG"
    # re-classify the stored result (eigenvalues are in the file)
    assert main(["dft", "analyze", str(out / "result.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "semiconductor"
    assert data["gap_up"] == pytest.approx(r.analysis.gaps["up"].gap)


def test_overlapping_atoms_are_refused_before_gpaw_starts(tmp_path, capsys):
    s = diamond_si()
    s.replace(1, "Si", coords=[0.01, 0.0, 0.0])
    with pytest.raises(InputError, match="overlapping atoms: sites 0 .* and 1"):
        run_gpaw(s, GPAWSettings(), work_dir=tmp_path / "gpaw")
    assert not (tmp_path / "gpaw").exists()
    cif = tmp_path / "bad.cif"
    s.to(filename=str(cif))
    out = tmp_path / "out"
    assert main(["dft", "run", str(cif), "--engine", "gpaw", "--out", str(out)]) == 2
    assert "overlapping atoms" in capsys.readouterr().err
    assert not out.exists()


def test_vasp_engine_without_vasp_says_how_to_configure(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ATOMATE2_VASP_CMD", "vasp_std_not_installed")
    cif = tmp_path / "Si.cif"
    diamond_si().to(filename=str(cif))
    out = tmp_path / "out"
    assert main(["dft", "run", str(cif), "--engine", "vasp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ATOMATE2_VASP_CMD" in err and "VASP_CMD" in err
    assert not out.exists()
