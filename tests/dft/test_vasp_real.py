"""Verdicts for the real VASP runs in ../shared/data/vasp (parsed, not recomputed)."""

from __future__ import annotations

import gzip
import json
import shutil
import xml.etree.ElementTree as ET

import pytest
from pymatgen.io.vasp import Oszicar, Outcar, Vasprun

from smoacs_flows.cli import main
from smoacs_flows.dft.vasp import parse_vasp_output
from smoacs_flows.errors import InputError


def test_al_spin_static_is_nonmagnetic_metal(shared_data):
    r = parse_vasp_output(shared_data / "vasp" / "Al_spin_static")
    a = r.analysis
    assert r.spin_polarised and r.reduced_formula == "Al"
    assert a.verdict == "nonmagnetic_metal"
    assert not a.gaps["up"].gapped and not a.gaps["down"].gapped
    assert abs(r.total_moment) < 0.01
    assert a.dos_at_ef["up"] > 0.05 and a.polarisation == pytest.approx(0.0, abs=0.01)
    vr = Vasprun(
        str(shared_data / "vasp" / "Al_spin_static" / "vasprun.xml.gz"), parse_potcar_file=False
    )
    assert r.efermi == pytest.approx(vr.efermi)
    assert r.energy == pytest.approx(vr.final_energy)


def test_feo_through_atomate2_taskdoc(shared_data):
    d = shared_data / "vasp" / "FeO_spin"
    r = parse_vasp_output(d)
    assert r.settings["parser"] == "atomate2/emmet TaskDoc"
    assert r.spin_polarised and r.reduced_formula == "FeO" and r.n_formula_units == 2
    # moments agree with an independent parse of OUTCAR / OSZICAR
    outcar = Outcar(str(d / "OUTCAR.gz"))
    assert r.site_moments == pytest.approx([m["tot"] for m in outcar.magnetization])
    mag = Oszicar(str(d / "OSZICAR.gz")).ionic_steps[-1]["mag"]
    assert r.total_moment == pytest.approx(mag)
    assert r.moment_per_fu == pytest.approx(mag / 2)
    # per-spin gaps: the smaller one is pymatgen's overall band gap of the run
    a = r.analysis
    vr = Vasprun(str(d / "vasprun.xml.gz"), parse_potcar_file=False)
    gap, _, _, _ = vr.eigenvalue_band_properties
    assert min(a.gaps["up"].gap, a.gaps["down"].gap) == pytest.approx(gap, abs=1e-4)
    # Γ-only relaxation: both channels gapped; the verdict comes with a mesh warning
    assert a.verdict == "semiconductor" and a.polarisation is None
    assert any("k-point" in w for w in a.warnings)


def _ispin1_copy(src, dst):
    """A copy of a real spin-polarised vasprun.xml turned into an ISPIN=1 one."""
    with gzip.open(src) as fh:
        tree = ET.parse(fh)
    root = tree.getroot()
    for parent in root.iter():
        for child in list(parent):
            if child.tag == "set" and child.get("comment") == "spin 2":
                parent.remove(child)
            if child.tag == "i" and child.get("name") == "ISPIN":
                child.text = "1"
    tree.write(dst)


def test_ispin1_vasprun_is_not_spin_polarised(shared_data, tmp_path, capsys):
    run = tmp_path / "Al_ispin1"
    run.mkdir()
    _ispin1_copy(shared_data / "vasp" / "Al_spin_static" / "vasprun.xml.gz", run / "vasprun.xml")
    r = parse_vasp_output(run)
    assert not r.spin_polarised
    assert r.analysis.verdict == "not_spin_polarised"
    assert main(["dft", "analyze", str(run / "vasprun.xml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "not_spin_polarised" and out["gap_up"] is None


def test_directory_without_vasprun_is_a_clear_error(shared_data, tmp_path, capsys):
    run = tmp_path / "FeO_no_vasprun"
    shutil.copytree(shared_data / "vasp" / "FeO_spin", run)
    (run / "vasprun.xml.gz").unlink()
    with pytest.raises(InputError, match="no vasprun.xml"):
        parse_vasp_output(run)
    assert main(["dft", "analyze", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(run) in err


def test_truncated_vasprun_is_a_clear_error(shared_data, tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    with gzip.open(shared_data / "vasp" / "Al_spin_static" / "vasprun.xml.gz") as fh:
        text = fh.read()
    (run / "vasprun.xml").write_bytes(text[: len(text) // 3])
    with pytest.raises(InputError, match="vasprun.xml"):
        parse_vasp_output(run)


def test_cli_analyze_prints_verdict_table_and_plot(shared_data, tmp_path, capsys):
    png = tmp_path / "al.png"
    assert (
        main(["dft", "analyze", str(shared_data / "vasp" / "Al_spin_static"), "--plot", str(png)])
        == 0
    )
    out = capsys.readouterr().out
    assert "nonmagnetic_metal" in out and "P(E_F)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(
            ["dft", "analyze", str(shared_data / "vasp" / "FeO_spin" / "vasprun.xml.gz"), "--json"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "semiconductor"
    assert data["moment_per_fu"] == pytest.approx(2.0, abs=1e-3)
    assert set(data["gaps"]) == {"up", "down"}
