"""The campaign's GPAW fan-out is GpawSpinDosMaker: under jobflow's ``run_locally`` the DFT
stage and the summary of a campaign run on a tiny survivor, with no FireWorks at all."""

from __future__ import annotations

import dataclasses

import pytest
from jobflow import Flow, run_locally

from smoacs_flows.dft.gpaw_maker import GpawSpinDosMaker
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.makers import HalfMetalDftMaker
from smoacs_flows.makers.jobs import summary_job
from tests.dft.gpaw_structures import bcc_fe

pytest.importorskip("gpaw")


def test_gpaw_fanout_uses_the_maker_under_run_locally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fe = bcc_fe()
    sun = {
        "records": [
            {"id": "fe-0", "reduced_formula": "Fe", "structure": fe.as_dict(), "screening": {}}
        ],
        "counts": {"proposed": 1, "prefiltered": 1, "relaxed": 1, "sun": 1},
    }
    gpaw = {"ecut": 200, "kpoint_density": 1.5, "dense_kpoint_density": 2.0, "min_kpoints": 2}
    dft_maker = HalfMetalDftMaker(settings={"engine": "gpaw", "gpaw": gpaw})
    # the campaign's stages.dft.gpaw became the Maker's typed fields
    assert isinstance(dft_maker.gpaw_maker, GpawSpinDosMaker)
    assert dft_maker.gpaw_maker == GpawSpinDosMaker(**{**gpaw, "ecut": 200.0})
    # a Python user swaps the Maker as with atomate2's (here: a Gaussian DOS, no PDOS)
    dft_maker = dataclasses.replace(
        dft_maker,
        gpaw_maker=dataclasses.replace(dft_maker.gpaw_maker, dos_method="gaussian:0.1", pdos=False),
    )
    fan = dft_maker.make(sun)
    summ = summary_job(sun, fan.output)
    out = run_locally(Flow([fan, summ]), ensure_success=True, create_folders=True)

    gpaw_jobs = [r for r in out.values() if isinstance(r[1].output, DFTResult)]
    assert len(gpaw_jobs) == 1
    result = gpaw_jobs[0][1].output
    assert result.candidate_id == "fe-0" and result.analysis.verdict == "magnetic_metal"
    assert result.dos_method.startswith("gaussian 0.1") and result.dos.pdos == {}
    summary = out[summ.uuid][1].output
    assert ("DFT", 1) in [tuple(step) for step in summary["funnel"]]
    assert summary["top"][0]["verdict"] == "magnetic_metal"
