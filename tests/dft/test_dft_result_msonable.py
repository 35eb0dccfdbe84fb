"""DFTResult in pymatgen's own types: monty round trips, a CompleteDos that pymatgen's
DosPlotter plots, and results stored in the older form still read (real VASP outputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monty.serialization import dumpfn, loadfn
from pymatgen.electronic_structure.core import Spin
from pymatgen.electronic_structure.dos import CompleteDos
from pymatgen.io.vasp import Vasprun

from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.dft.vasp import parse_vasp_output

PNG = b"\x89PNG\r\n\x1a\n"


def _vasprun(shared_data, name: str) -> Vasprun:
    return Vasprun(str(shared_data / "vasp" / name / "vasprun.xml.gz"), parse_potcar_file=False)


@pytest.mark.parametrize("name", ["Al_spin_static", "FeO_spin"])
def test_dumpfn_loadfn_round_trip(shared_data, tmp_path, name):
    r = parse_vasp_output(shared_data / "vasp" / name)
    path = tmp_path / "result.json"
    dumpfn(r, path)
    raw = json.loads(path.read_text())
    assert raw["@module"] == "smoacs_flows.dft.schema" and raw["@class"] == "DFTResult"
    back = loadfn(path)
    assert isinstance(back, DFTResult) and isinstance(back.dos, CompleteDos)
    assert back.model_dump(mode="json") == r.model_dump(mode="json")
    # the DOS is pymatgen's own, against an independent parse of the same vasprun.xml
    vr = _vasprun(shared_data, name)
    assert back.dos.efermi == pytest.approx(vr.efermi)
    for spin in (Spin.up, Spin.down):
        assert np.allclose(back.dos.densities[spin], vr.tdos.densities[spin])
    formula = vr.final_structure.composition.reduced_formula
    assert back.dos.structure.composition.reduced_formula == formula
    # the file this project writes is the same MSONable form (loadfn reads it too)
    r.write(tmp_path / "written.json")
    assert isinstance(loadfn(tmp_path / "written.json"), DFTResult)
    assert DFTResult.read(path).analysis.verdict == r.analysis.verdict


def test_dosplotter_plots_the_result_to_png(shared_data, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.electronic_structure.plotter import DosPlotter

    r = loadfn_round_trip(parse_vasp_output(shared_data / "vasp" / "FeO_spin"), tmp_path)
    plotter = DosPlotter(sigma=0.05)
    plotter.add_dos("Total", r.dos)
    plotter.add_dos_dict(r.dos.get_element_dos())  # site-projected (LORBIT) → Fe, O
    assert set(plotter.get_dos_dict()) == {"Total", "Fe", "O"}
    # spin down is plotted below the axis: pymatgen's convention is kept
    total = plotter.get_dos_dict()["Total"]["densities"]
    assert set(total) == {"1", "-1"}
    ax = plotter.get_plot(xlim=(-6, 4))
    png = tmp_path / "feo_dos.png"
    ax.figure.savefig(png)
    plt.close("all")
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    # element DOS sums to pymatgen's own element DOS of the vasprun.xml
    vr = _vasprun(shared_data, "FeO_spin")
    ref = {str(el): d for el, d in vr.complete_dos.get_element_dos().items()}
    for el, d in r.dos.get_element_dos().items():
        assert np.allclose(d.densities[Spin.down], ref[str(el)].densities[Spin.down])


def loadfn_round_trip(r: DFTResult, tmp_path) -> DFTResult:
    """``r`` after ``dumpfn`` / ``loadfn`` (what a user of a stored result holds)."""
    dumpfn(r, tmp_path / "r.json")
    return loadfn(tmp_path / "r.json")


def test_old_stored_form_still_reads(shared_data):
    """A result stored before the pymatgen DOS: ``dos`` as per-spin arrays, schema 1."""
    r = parse_vasp_output(shared_data / "vasp" / "Al_spin_static")
    vr = _vasprun(shared_data, "Al_spin_static")
    old = r.model_dump(mode="json")
    old.update(
        schema_version=1,
        dos={
            "energies": vr.tdos.energies.tolist(),
            "up": vr.tdos.densities[Spin.up].tolist(),
            "down": vr.tdos.densities[Spin.down].tolist(),
            "method": "vasp",
        },
        complete_dos=None,
    )
    old.pop("dos_method")
    back = DFTResult.model_validate(old)
    assert isinstance(back.dos, CompleteDos) and back.dos_method == "vasp"
    assert back.dos.efermi == pytest.approx(vr.efermi)
    assert np.allclose(back.dos.densities[Spin.up], vr.tdos.densities[Spin.up])
    assert back.dos_data.up == pytest.approx(old["dos"]["up"])
    # and as the results store hands it to the report: plain arrays either way
    from smoacs_flows.dft.dos import dos_data

    new_form = r.model_dump(mode="json")["dos"]
    assert dos_data(old["dos"]).down == pytest.approx(dos_data(new_form).down)
