"""A whole tiny campaign Flow under jobflow's ``run_locally`` (no FireWorks), after a
``dumpfn``/``loadfn`` round trip: its DFT job is the GpawSpinDosMaker's, its summary a funnel."""

from __future__ import annotations

import copy

import pytest
from jobflow import run_locally
from monty.serialization import dumpfn, loadfn

from smoacs_flows.campaign import load_campaign
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.makers import HalfMetalCampaignMaker
from tests.makers._campaign import CHEAP_STAGES, tiny_campaign, write_campaign


@pytest.mark.slow
def test_campaign_flow_under_run_locally(tmp_path, monkeypatch):
    stages = copy.deepcopy(CHEAP_STAGES)
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(n=2, batch=2, steps=2, stages=stages))
    flow = HalfMetalCampaignMaker().make(load_campaign(path))
    dumpfn(flow, tmp_path / "flow.json")
    flow = loadfn(tmp_path / "flow.json")
    monkeypatch.chdir(tmp_path)
    responses = run_locally(flow, create_folders=True, ensure_success=True)
    summary = responses[flow.output.uuid][1].output
    funnel = dict((name, n) for name, n in summary["funnel"])
    assert funnel["proposed"] == 2 and funnel["DFT"] == 1
    results = [r[1].output for r in responses.values() if isinstance(r[1].output, DFTResult)]
    assert len(results) == 1 and results[0].candidate_id == summary["top"][0]["id"]
    assert results[0].analysis.verdict == summary["top"][0]["verdict"]
