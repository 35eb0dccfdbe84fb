"""jobflow jobs that are not a Maker's ``make``: routing, the DFT fan-out and its collector,
the summary.

The stage Makers of :mod:`smoacs_flows.makers.core` decorate ``make`` themselves (atomate2's
pattern). The plain stage wrappers below (``propose_job`` ... ``sun_job``, ``gpaw_dft_job``) are
no longer used by new flows; they stay so fireworks stored by earlier versions still run on
``resume``.

Candidate records go to the JobStore's ``data`` store (``data=["records"]``), so documents in
the main store stay small and MongoDB's 16 MB limit never bites (GridFS holds the blobs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import Flow, Job, Maker, Response, job

from smoacs_flows.makers import stages


def route(obj: Job | Flow, category: str, metadata: dict[str, Any]) -> Job | Flow:
    """Give every job of ``obj`` a FireWorks category and metadata (not passed on to jobs they
    create dynamically: each dynamic job is routed explicitly)."""
    jobs = [obj] if isinstance(obj, Job) else list(obj.iterflow())
    for j in jobs:
        j = j[0] if isinstance(j, tuple) else j
        j.update_config({"manager_config": {"_category": category}}, dynamic=False)
        j.update_metadata(dict(metadata), dynamic=False)
    return obj


@job(data=["records"])
def propose_job(payload: dict, batch_indices: list[int], variant: dict | None = None) -> dict:
    """Optimise proposal batches (GPU)."""
    return stages.propose(payload, batch_indices, variant)


@job(data=["records"])
def prefilter_job(proposal_outputs: list[dict], settings: dict, policy: str) -> dict:
    """Prefilter the records of a few proposal jobs (CPU)."""
    return stages.prefilter(proposal_outputs, settings, policy)


@job(data=["records"])
def relax_job(prefiltered: dict, settings: dict) -> dict:
    """MLIP-relax one chunk (GPU)."""
    return stages.relax(prefiltered, settings)


@job(data=["entries"])
def reference_relax_job(relaxed_outputs: list[dict], settings: dict, base_dir: str) -> dict:
    """MLIP-relax the reference phases of the campaign's chemical systems (GPU)."""
    return stages.reference_energies(relaxed_outputs, settings, base_dir)


@job(data=["records"])
def sun_job(
    relaxed_outputs: list[dict], settings: dict, base_dir: str, references: dict | None = None
) -> dict:
    """Campaign-wide stability, uniqueness and novelty (CPU)."""
    return stages.sun_filter(relaxed_outputs, settings, base_dir, references)


def _plain(result: Any) -> Any:
    """A DFT job's output as a plain dict (a resolved :class:`DFTResult` is an object)."""
    return result.model_dump(mode="json") if hasattr(result, "model_dump") else result


@job(data=["dos", "eigenvalues"])
def gpaw_dft_job(record: dict, dft: dict) -> dict:
    """The GPAW half-metal chain on one survivor; logs go to the job's folder.

    Kept so fireworks stored before :class:`~smoacs_flows.dft.gpaw_maker.GpawSpinDosMaker`
    (which the fan-out now uses) still run on ``resume``."""
    return stages.run_gpaw(record, dft, work_dir=str(Path.cwd() / "gpaw"))


@job
def tag_dft_result(result: dict, candidate_id: str) -> dict:
    """A VASP chain's DFTResult dict, tagged with its candidate (small: no DOS arrays)."""
    result = _plain(result)
    if not isinstance(result, dict):
        raise RuntimeError(f"DFT chain of {candidate_id} failed upstream (no analysis result)")
    out = {k: v for k, v in result.items() if k not in ("dos", "eigenvalues", "complete_dos")}
    out["candidate_id"] = candidate_id
    return out


@job
def collect_dft(results: list[dict]) -> dict:
    """The DFT results of the campaign without their DOS arrays (those stay in ``data``);
    ``failed`` counts candidates whose DFT job failed (their result is missing)."""
    drop = ("dos", "eigenvalues", "complete_dos")
    results = [_plain(r) for r in results]
    return {
        "results": [{k: v for k, v in r.items() if k not in drop} for r in results if r],
        "failed": sum(1 for r in results if not r),
    }


def dft_fanout(
    sun: dict,
    dft: dict,
    cpu_category: str,
    metadata: dict,
    vasp_maker: Maker | None = None,
    gpaw_maker: Maker | None = None,
) -> Response | dict:
    """One DFT sub-flow per selected S.U.N. survivor, added by replacing the running job.

    Called by :meth:`~smoacs_flows.makers.core.HalfMetalDftMaker.fanout` (the job). VASP chains
    come from ``vasp_maker`` (a :class:`~smoacs_flows.dft.vasp.SpinDOSFlowMaker` built at submit
    time, so powerups applied to the submitted Flow are in it), GPAW jobs from ``gpaw_maker`` (a
    :class:`~smoacs_flows.dft.gpaw_maker.GpawSpinDosMaker`, one job per candidate whose output
    is the :class:`DFTResult` tagged with its candidate). The replacement's last job
    (``collect_dft``) takes the running job's uuid, so references to its output resolve to the
    collected results. Every new job is routed explicitly: the DFT category
    (``stages.dft.category``, default the cpu one) for engine jobs, cpu for the collector.
    """
    from jobflow import CURRENT_JOB, OnMissing

    from smoacs_flows.makers.settings import DftSettings

    st = DftSettings.model_validate(dft)
    chosen = stages.select_for_dft(sun["records"], st)
    if not chosen:
        return {"results": []}
    cat = st.category or cpu_category
    cur = CURRENT_JOB.job
    base_meta = {**cur.metadata, **metadata}
    subs, outputs = [], []
    for rec in chosen:
        meta = {**base_meta, "stage": "dft", "candidate_id": rec["id"]}
        if st.engine == "gpaw":
            if gpaw_maker is None:
                from smoacs_flows.dft.gpaw_maker import GpawSpinDosMaker

                gpaw_maker = GpawSpinDosMaker.from_settings(st.gpaw, st.analysis)
            structure = stages.dft_structure(rec, st.symprec)
            sub = gpaw_maker.make(structure, candidate_id=rec["id"])
            sub.name = f"dft gpaw {rec['id']}"
            out = sub.output
        else:
            if vasp_maker is None:
                from smoacs_flows.dft.vasp import SpinDOSFlowMaker

                vasp_maker = SpinDOSFlowMaker.from_settings(st.vasp, st.analysis)
            chain = vasp_maker.make(stages.dft_structure(rec, st.symprec))
            tag = tag_dft_result(chain.output, rec["id"])
            sub = Flow([chain, tag], output=tag.output, name=f"dft vasp {rec['id']}")
            # a failure anywhere in the chain fizzles the jobs after it at once (each gets
            # None and fails fast) instead of leaving them WAITING: the collector and the
            # campaign summary still run, and `resume` reruns the failed job and its chain
            for j, _ in sub.iterflow():
                j.config.on_missing_references = OnMissing.NONE
            out = tag.output
        subs.append(route(sub, cat, meta))
        outputs.append(out)
    collect = collect_dft(outputs)
    collect.name = cur.name
    # a failed DFT candidate must not block the campaign: its result is collected as None
    collect.config.on_missing_references = OnMissing.NONE
    route(collect, cpu_category, {**base_meta, "stage": "dft"})
    collect.set_uuid(cur.uuid)
    collect.index = cur.index + 1
    return Response(replace=Flow([*subs, collect], name="dft"))


@job
def summary_job(sun: dict, dft: dict, e_hull_max: float | None = None) -> dict:
    """The campaign's funnel and top candidates (``e_hull_max``: the DFT-hull step)."""
    out = stages.summarise(sun, dft.get("results", []), e_hull_max=e_hull_max)
    if dft.get("failed"):
        out["notes"].append(f"{dft['failed']} DFT candidate(s) failed; see the fizzled fireworks")
    return out
