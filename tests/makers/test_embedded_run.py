"""The embedded run end to end: CHGNet proposals, screening, one GPAW DFT candidate, with
real worker processes (one per category) on the embedded LaunchPad and JobStore.

The campaign grows rock-salt crystals from Mg and O only, so the DFT'd candidate is MgO: a
wide-gap insulator (experiment 7.8 eV, PBE about 4.5 eV), whose verdict must be
``semiconductor``. The plane-wave cutoff is 300 eV (GPAW's default here): at the 150 eV of the
other cheap runs the O potential is so underconverged that MgO comes out metallic (measured)."""

from __future__ import annotations

import copy

import pytest

from smoacs_flows.cli import main
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.smoacs.elements import symbols
from smoacs_flows.stores import embedded_job_store
from tests.makers._campaign import CHEAP_STAGES, metallic_channels, tiny_campaign, write_campaign


@pytest.mark.slow
def test_embedded_run_tiny_campaign(tmp_path, capsys):
    stages = copy.deepcopy(CHEAP_STAGES)
    stages["dft"]["gpaw"]["ecut"] = 300
    spec = tiny_campaign(n=2, batch=2, steps=2, stages=stages, template="rocksalt.cif")
    spec.update(
        policy="ionic",
        exclude=[s for s in symbols() if s not in ("Mg", "O")],
        losses=[{"term": "energy", "predictor": "chgnet", "weight": 1.0}],
    )
    path = write_campaign(tmp_path / "c.yaml", spec)
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
    assert result["engine"] == "gpaw" and result["candidate_id"] == gpaw[0]["spec"]["candidate_id"]
    # MgO: both spin channels gapped by more than 1 eV, no moment, no states at E_F in its DOS
    assert result["reduced_formula"] == "MgO"
    assert result["analysis"]["verdict"] == "semiconductor"
    for spin in ("up", "down"):
        assert result["analysis"]["gaps"][spin]["gap"] > 1.0, spin
    assert abs(result["total_moment"]) < 0.05
    assert metallic_channels(result) == {"up": False, "down": False}
    # the DOS and eigenvalues went to the `data` store: the output document holds references
    # to blobs that are there (jobflow's own layout), not the arrays
    for key in ("dos", "eigenvalues"):
        ref = doc["output"][key]
        assert ref["store"] == "data" and set(ref) >= {"blob_uuid", "@class"}, key
        blob = store.additional_stores["data"].query_one({"blob_uuid": ref["blob_uuid"]})
        assert blob is not None and blob["data"], key
