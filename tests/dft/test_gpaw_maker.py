"""GpawSpinDosMaker: a jobflow Maker on a pymatgen Structure, run under ``run_locally``; its
MSONable DFTResult with a site/orbital-projected CompleteDos that pymatgen plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jobflow import run_locally
from monty.serialization import dumpfn, loadfn
from pymatgen.electronic_structure.core import OrbitalType, Spin
from pymatgen.electronic_structure.dos import CompleteDos

from smoacs_flows.dft.analysis import AnalysisSettings
from smoacs_flows.dft.gpaw_engine import GPAWSettings
from smoacs_flows.dft.gpaw_maker import GpawSpinDosMaker
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.makers.recovery import Overrides, apply_overrides, job_kind
from tests.dft.gpaw_structures import bcc_fe

pytest.importorskip("gpaw")

#: a tiny bcc Fe calculation (1 atom, low cutoff, coarse meshes: ~10 s on one core)
TINY = {"ecut": 200.0, "kpoint_density": 1.5, "dense_kpoint_density": 2.0, "min_kpoints": 2}


def test_maker_fields_are_the_gpaw_settings():
    assert GpawSpinDosMaker().gpaw_settings() == GPAWSettings()  # same defaults
    m = GpawSpinDosMaker.from_settings(
        {"ecut": 350, "scf_convergence": {"energy": 1e-5}}, {"min_gap": 0.2}
    )
    assert m.ecut == 350 and m.scf_energy == 1e-5 and m.scf_density == 1e-4
    assert m.analysis == AnalysisSettings(min_gap=0.2)
    assert GpawSpinDosMaker.from_dict(json.loads(json.dumps(m.as_dict()))) == m
    with pytest.raises(ValueError, match="ecut"):
        GpawSpinDosMaker(ecut=-1.0)  # checked when made, not on a worker


def test_resume_override_changes_the_maker_of_a_stored_job():
    j = GpawSpinDosMaker(**TINY).make(bcc_fe(), candidate_id="c1")
    spec = {"_tasks": [{"job": json.loads(json.dumps(j.as_dict()))}]}
    assert job_kind(spec) == "gpaw"
    upd = apply_overrides(spec, Overrides(gpaw={"maxiter": 60}))
    bound = upd["_tasks"][0]["job"]["function"]["@bound"]
    new = GpawSpinDosMaker.from_dict(bound)
    assert new.maxiter == 60 and new.ecut == TINY["ecut"]


def test_maker_on_a_structure_under_run_locally(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.electronic_structure.plotter import DosPlotter

    monkeypatch.chdir(tmp_path)
    job = GpawSpinDosMaker(**TINY).make(bcc_fe())
    out = run_locally(job, ensure_success=True, create_folders=True)
    r = out[job.uuid][1].output
    assert isinstance(r, DFTResult) and r.engine == "gpaw"
    assert r.analysis.verdict == "magnetic_metal"
    assert r.total_moment == pytest.approx(2.2, abs=0.3)  # bcc Fe, PBE
    assert list(tmp_path.glob("job_*/gpaw/scf.txt"))  # GPAW's log in the job's folder

    # the DOS is a site- and orbital-projected CompleteDos ...
    back = loadfn_round_trip(r, tmp_path)
    dos = back.dos
    assert isinstance(dos, CompleteDos)
    assert back.model_dump(mode="json") == r.model_dump(mode="json")
    spd = dos.get_spd_dos()
    assert set(spd) == {OrbitalType.s, OrbitalType.p, OrbitalType.d}
    # ... in which, as for any 3d ferromagnet, the d states dominate at E_F (mean ±0.3 eV)
    e, both = dos.energies, (Spin.up, Spin.down)
    near = np.abs(e - dos.efermi) < 0.3
    at_ef = {o: sum(spd[o].densities[s][near].mean() for s in both) for o in spd}
    assert at_ef[OrbitalType.d] > at_ef[OrbitalType.s] + at_ef[OrbitalType.p]
    # and the moment is the d bands' exchange splitting: filled d↑ minus filled d↓
    below = e <= dos.efermi
    d_up, d_dn = (np.trapezoid(spd[OrbitalType.d].densities[s][below], e[below]) for s in both)
    assert d_up - d_dn == pytest.approx(r.total_moment, abs=0.5)

    plotter = DosPlotter()
    plotter.add_dos("Total", dos)
    plotter.add_dos_dict({str(k): v for k, v in spd.items()})
    ax = plotter.get_plot(xlim=(-6, 4))
    png = tmp_path / "fe_dos.png"
    ax.figure.savefig(png)
    plt.close("all")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def loadfn_round_trip(r: DFTResult, tmp_path) -> DFTResult:
    """``r`` after ``dumpfn`` / ``loadfn``."""
    dumpfn(r, tmp_path / "r.json")
    return loadfn(tmp_path / "r.json")
