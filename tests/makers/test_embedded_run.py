"""The embedded run end to end: CHGNet proposals, screening, one GPAW DFT candidate, with
real worker processes (one per category) on the embedded LaunchPad and JobStore."""

from __future__ import annotations

import pytest

from smoacs_flows.cli import main
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.stores import embedded_job_store
from tests.makers._campaign import CHEAP_STAGES, tiny_campaign, write_campaign


@pytest.mark.slow
def test_embedded_run_tiny_campaign(tmp_path, capsys):
    path = write_campaign(
        tmp_path / "c.yaml", tiny_campaign(n=2, batch=2, steps=2, stages=CHEAP_STAGES)
    )
    rc = main(["run", str(path), "--poll", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    # live progress per stage, then the funnel and the DFT'd candidate
    assert "propose 0/1" in out and "summary 1/1" in out
    assert "campaign tiny v1: done" in out
    funnel = next(line for line in out.splitlines() if line.startswith("funnel:"))
    assert "proposed 2 → prefiltered" in funnel and "DFT 1 →" in funnel
    assert "results store: 2 candidate documents updated" in out

    lp = EmbeddedLaunchPad()
    with lp.session(write=False):
        fws = list(lp.fireworks.find({"spec.tags": "smoacs:tiny:v1"}))
        launches = list(lp.launches.find({}))
    assert {fw["state"] for fw in fws} == {"COMPLETED"}
    by_stage: dict[str, list] = {}
    for fw in fws:
        by_stage.setdefault(fw["spec"]["stage"], []).append(fw)
    # fan-out (completed) + one GPAW firework + the collector, all on the cpu queue
    assert len(by_stage["dft"]) == 3
    assert {fw["spec"]["_category"] for fw in by_stage["dft"]} == {"cpu"}
    gpaw = [fw for fw in by_stage["dft"] if fw["name"].startswith("dft gpaw ")]
    assert len(gpaw) == 1 and gpaw[0]["spec"]["candidate_id"].startswith("tiny-b000-")
    # every firework ran once, on the worker of its category
    cats = {fw["fw_id"]: fw["spec"]["_category"] for fw in fws}
    assert sorted(launch["fw_id"] for launch in launches) == sorted(cats)
    for launch in launches:
        assert launch["fworker"]["category"] == cats[launch["fw_id"]]
    # the DFT result is in the embedded JobStore, its DOS in the `data` store
    store = embedded_job_store()
    store.connect()
    doc = store.query_one({"metadata.stage": "dft", "name": gpaw[0]["name"]})
    result = store.get_output(doc["uuid"], load=True)
    assert result["engine"] == "gpaw" and result["analysis"]["verdict"]
    assert result["dos"]["up"] and result["candidate_id"] == gpaw[0]["spec"]["candidate_id"]
    assert store.additional_stores["data"].count() >= 1
