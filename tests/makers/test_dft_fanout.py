"""The DFT fan-out under FireWorks: one dynamic firework per survivor, routed to the DFT
category; a failing candidate fizzles without blocking the collector and the summary."""

from __future__ import annotations

from jobflow import Flow
from jobflow.managers.fireworks import flow_to_workflow
from pymatgen.core import Structure

from smoacs_flows.makers import HalfMetalDftMaker
from smoacs_flows.makers.jobs import route, summary_job
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.stores import embedded_job_store
from tests.makers._campaign import TEMPLATES
from tests.makers.test_workers import _worker


def test_fanout_routes_dft_and_survives_a_failed_candidate(tmp_path):
    s = Structure.from_file(TEMPLATES / "half_heusler_C1b.cif")
    recs = [
        {
            "id": f"hm-{i}",
            "reduced_formula": s.composition.reduced_formula,
            "structure": s.as_dict(),
            "screening": {"mlip_energy_per_atom": -5.0 + i, "e_above_hull": None},
        }
        for i in range(3)
    ]
    sun = {"records": recs, "counts": {"proposed": 3, "prefiltered": 3, "relaxed": 3, "sun": 3}}
    # two candidates (best by energy: hm-0, hm-1); one SCF iteration cannot converge → fails
    dft = {
        "engine": "gpaw",
        "max_candidates": 2,
        "category": "dftq",
        "gpaw": {"ecut": 100, "kpoint_density": 0.1, "min_kpoints": 1, "maxiter": 1},
    }
    fan = HalfMetalDftMaker(settings=dft, metadata={"campaign": "t"}).make(sun)
    summ = route(summary_job(sun, fan.output), "cpu", {"campaign": "t", "stage": "summary"})
    summ.name = "summary"
    lp = EmbeddedLaunchPad()
    lp.add_wf(flow_to_workflow(Flow([fan, summ]), store=embedded_job_store()))

    _worker("cpu", tmp_path)  # the fan-out: adds the DFT fireworks to the 'dftq' queue
    with lp.session(write=False):
        fws = {d["name"]: d for d in lp.fireworks.find({})}
    gpaw = sorted(n for n in fws if n.startswith("dft gpaw "))
    assert gpaw == ["dft gpaw hm-0", "dft gpaw hm-1"]
    for n in gpaw:
        assert fws[n]["spec"]["_category"] == "dftq" and fws[n]["state"] == "READY"
        assert fws[n]["spec"]["candidate_id"] == n.split()[-1]
    assert fws["summary"]["state"] == "WAITING"

    _worker("dftq", tmp_path)  # both fail (maxiter 1)
    _worker("cpu", tmp_path)  # collector (tolerates missing results) and summary
    with lp.session(write=False):
        states = {d["name"]: d["state"] for d in lp.fireworks.find({})}
    assert [states[n] for n in gpaw] == ["FIZZLED", "FIZZLED"]
    assert states["summary"] == "COMPLETED"
    store = embedded_job_store()
    store.connect()
    out = store.get_output(summ.uuid)
    assert out["funnel"][4] == ["DFT", 0]
    assert "2 DFT candidate(s) failed" in " ".join(out["notes"])


def test_vasp_fanout_builds_one_atomate2_chain_per_survivor_on_its_category():
    """engine: vasp — the replacement holds SpinDOSFlowMaker chains routed to 'vasp' (built,
    not run: no VASP here), and a collector with this job's uuid on the cpu queue."""
    from jobflow import CURRENT_JOB, Response

    s = Structure.from_file(TEMPLATES / "half_heusler_C1b.cif")
    recs = [
        {"id": f"v-{i}", "structure": s.as_dict(), "screening": {"e_above_hull": 0.01 * i}}
        for i in range(3)
    ]
    dft = {"engine": "vasp", "max_candidates": 2, "category": "vasp", "vasp": {"max_errors": 3}}
    fan = HalfMetalDftMaker(settings=dft, metadata={"campaign": "t"}).make({"records": recs})
    CURRENT_JOB.job = fan
    try:
        resp = type(fan.maker).fanout.original(fan.maker, {"records": recs})
    finally:
        CURRENT_JOB.job = None
    assert isinstance(resp, Response)
    jobs = [j for j, _ in resp.replace.iterflow()]
    collect = [j for j in jobs if j.uuid == fan.uuid]
    assert len(collect) == 1 and collect[0].index == fan.index + 1
    assert collect[0].config.manager_config == {"_category": "cpu"}
    engine_jobs = [j for j in jobs if j.uuid != fan.uuid]
    assert {j.metadata["candidate_id"] for j in engine_jobs} == {"v-0", "v-1"}
    assert {j.config.manager_config["_category"] for j in engine_jobs} == {"vasp"}
    names = " ".join(j.name for j in engine_jobs)
    assert "relax" in names and "static" in names and "spin DOS uniform" in names
    # custodian settings reach every VASP job
    vasp_jobs = [j for j in engine_jobs if hasattr(j.maker, "run_vasp_kwargs")]
    assert vasp_jobs and all(j.maker.run_vasp_kwargs["max_errors"] == 3 for j in vasp_jobs)
