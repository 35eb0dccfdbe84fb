"""atomate2 powerups on a submitted campaign Flow reach the VASP jobs the DFT fan-out makes at
run time, through FireWorks (the embedded LaunchPad) and atomate2's ``monkeypatch_vasp``.

The campaign Flow is the real one (``HalfMetalCampaignMaker().make(campaign)``, engine vasp);
the powerups are applied to the whole Flow, as an atomate2 user would. Running the proposal and
MLIP stages is not under test, so the Flow's DFT fan-out and summary jobs run behind a stand-in
for its S.U.N. job (same uuid, so their references resolve) that outputs one FeO candidate;
the VASP boundary is ``monkeypatch_vasp`` with the real FeO outputs (see
tests/dft/test_vasp_flow.py), whose fake also checks the INCAR keys listed below.
"""

from __future__ import annotations

import copy

import pytest
from atomate2.vasp.powerups import add_metadata_to_flow, update_user_incar_settings
from jobflow import Flow
from jobflow.managers.fireworks import flow_to_workflow
from pymatgen.io.vasp import Incar

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.makers import HalfMetalCampaignMaker
from smoacs_flows.makers.jobs import route
from smoacs_flows.stores import embedded_job_store
from tests.dft._feo import feo_sun_output, run_tagged, sun_standin
from tests.dft.test_vasp_flow import STAGES, _build_refs, job_dir, mock_settings
from tests.makers._campaign import ROOT, tiny_campaign

TAG = "smoacs:vasp-powerups:v1"


@pytest.fixture
def mock_vasp(monkeypatch, tmp_path):
    from atomate2.utils.testing.vasp import monkeypatch_vasp

    yield from monkeypatch_vasp(monkeypatch, tmp_path / "refs", nelect=40)


def test_powerups_on_the_campaign_flow_reach_every_vasp_stage(mock_vasp, shared_data, tmp_path):
    feo = shared_data / "vasp" / "FeO_spin"
    # what the VASP stages must get: the campaign's INCAR and the powerup's NCORE
    _build_refs(feo, tmp_path / "refs", extra_incar={"LASPH": True, "NCORE": 4})
    mock_vasp(*mock_settings(["LASPH", "NCORE"]))

    data = tiny_campaign(
        name="vasp-powerups",
        stages={
            "dft": {
                "engine": "vasp",
                "max_candidates": 1,
                "symprec": None,  # the reference outputs are for the structure as given
                "vasp": {"incar": {"LASPH": True}, "max_errors": 1},
            }
        },
    )
    campaign = campaign_from_dict(data, source="test", base_dir=ROOT)
    flow = HalfMetalCampaignMaker().make(campaign)
    flow = update_user_incar_settings(flow, {"NCORE": 4})
    flow = add_metadata_to_flow(flow, {"project": "hm-powerups"})
    flow.update_metadata({"batch": "b7"})  # jobflow's own, dynamic: reaches new jobs too

    by_name = {j.name: j for j, _ in flow.iterflow()}
    sun = by_name["sun"]
    dft, summary = (copy.deepcopy(by_name[n]) for n in ("dft", "summary"))
    for j in (dft, summary):
        j.hosts = []  # leave the campaign Flow for the smaller one below
    standin = sun_standin(feo_sun_output(feo, "vasp-powerups-b000-c0000", 0.0))
    standin.set_uuid(sun.uuid)
    standin.name = "sun"
    route(standin, "cpu", {"campaign": "vasp-powerups", "stage": "sun"})
    wf = flow_to_workflow(
        Flow([standin, dft, summary]),
        store=embedded_job_store(),
        metadata={"smoacs_campaign": "vasp-powerups", "smoacs_version": 1, "tags": [TAG]},
    )
    lp = run_tagged(wf, [TAG], tmp_path / "launches")
    with lp.session(write=False):
        states = {d["name"]: d["state"] for d in lp.fireworks.find({})}
    assert set(STAGES) <= set(states)
    assert {states[n] for n in (*STAGES, "analyse_vasp_dos_job", "summary")} == {"COMPLETED"}

    store = embedded_job_store()
    store.connect()
    for name in STAGES:
        incar = Incar.from_file(job_dir(store, name) / "INCAR.gz")
        assert incar["NCORE"] == 4, name  # the powerup
        assert incar["LASPH"] is True, name  # stages.dft.vasp.incar
        assert incar["ISPIN"] == 2, name
        doc = store.query_one({"name": name}, load=False)
        assert doc["output"]["project"] == "hm-powerups", name  # add_metadata_to_flow
        assert doc["metadata"]["batch"] == "b7", name  # jobflow update_metadata
        assert doc["metadata"]["candidate_id"] == "vasp-powerups-b000-c0000", name
    out = store.get_output(summary.uuid)
    (row,) = [r for r in out["top"] if r["id"] == "vasp-powerups-b000-c0000"]
    assert row["verdict"] == "semiconductor"  # the copied FeO outputs, through the summary
