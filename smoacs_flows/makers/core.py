"""Makers in atomate2's style: dataclasses whose ``make`` is the stage's job (``@job``), so
powerups (``update_maker_kwargs``) reach their settings.

``HalfMetalCampaignMaker().make(campaign)`` builds the whole campaign Flow::

    propose (gpu, one job per optimiser batch, per sweep point)
      └─ prefilter (cpu, per relax chunk) ─ relax (gpu, per chunk) ─┐
                                   [reference relax (gpu, when references are MLIP-relaxed)]
                                                                  S.U.N. (cpu, campaign-wide)
                                                                    └─ DFT fan-out (cpu → one
                                                                       sub-flow per survivor,
                                                                       own category) ─ summary
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Job, Maker, job

from smoacs_flows.campaign import Campaign
from smoacs_flows.makers import jobs, stages
from smoacs_flows.makers.settings import Categories, StageSettings, stage_settings

#: stage names in pipeline order (job metadata ``stage``)
STAGES = ["propose", "prefilter", "relax", "references", "sun", "dft", "summary"]


def routed(maker: Any, j: Job, stage: str, name: str | None = None) -> Job:
    """``j`` (made by ``maker``) with the maker's FireWorks category and metadata + ``stage``.

    A Maker whose ``make`` is the job (atomate2's pattern) cannot route the job it returns;
    the campaign Maker routes each one (or apply ``jobflow``'s ``update_config`` yourself)."""
    if name is not None:
        j.name = name
    return jobs.route(j, maker.category, {**maker.metadata, "stage": stage})


@dataclass
class SmoacsProposalMaker(Maker):
    """One proposal job per ``batches_per_job`` optimiser batches (category gpu)."""

    name: str = "propose"
    category: str = "gpu"
    batches_per_job: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)

    def make(self, campaign: Campaign, variant: dict[str, Any] | None = None) -> Flow:
        """Proposal jobs of a campaign (or one sweep point); output = list of job outputs."""
        payload = stages.campaign_payload(campaign)
        n = stages.n_batches(campaign)
        label = f" {variant['label']}" if variant and variant.get("weights") else ""
        out: list[Job] = []
        for start in range(0, n, self.batches_per_job):
            idx = list(range(start, min(n, start + self.batches_per_job)))
            j = self.batch(payload, idx, variant)
            j.name = f"{self.name}{label} b{idx[0]:03d}" + (
                f"-{idx[-1]:03d}" if len(idx) > 1 else ""
            )
            jobs.route(
                j, self.category, {"campaign": campaign.name, **self.metadata, "stage": "propose"}
            )
            out.append(j)
        return Flow(out, output=[j.output for j in out], name=f"{self.name}{label}")

    @job(data=["records"])
    def batch(
        self, payload: dict[str, Any], batch_indices: list[int], variant: dict | None = None
    ) -> dict[str, Any]:
        """Optimise some of the campaign's batches (one job; GPU)."""
        return stages.propose(payload, batch_indices, variant)


@dataclass
class PrefilterMaker(Maker):
    """Prefilter the records of a few proposal jobs (category cpu)."""

    name: str = "prefilter"
    category: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)  # stages.screening
    policy: str = "ionic"
    metadata: dict[str, Any] = field(default_factory=dict)

    @job(data=["records"])
    def make(self, proposal_outputs: list[Any]) -> dict[str, Any]:
        """One prefilter job over the given proposal outputs."""
        return stages.prefilter(proposal_outputs, self.settings, self.policy)


@dataclass
class MlipRelaxMaker(Maker):
    """MLIP relaxation of one chunk of prefiltered candidates (category gpu)."""

    name: str = "relax"
    category: str = "gpu"
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @job(data=["records"])
    def make(self, prefiltered: Any) -> dict[str, Any]:
        """One relaxation job."""
        return stages.relax(prefiltered, self.settings)


@dataclass
class SunFilterMaker(Maker):
    """Stable, unique, novel: one campaign-wide job after every relaxation chunk (cpu)."""

    name: str = "sun"
    category: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)
    base_dir: str = "."
    metadata: dict[str, Any] = field(default_factory=dict)

    @job(data=["records"])
    def make(self, relaxed_outputs: list[Any], references: Any = None) -> dict[str, Any]:
        """The S.U.N. job (``references``: the reference-relaxation job's output)."""
        return stages.sun_filter(relaxed_outputs, self.settings, self.base_dir, references)


@dataclass
class ReferenceRelaxMaker(Maker):
    """MLIP relaxation of the reference phases of every relaxed candidate's chemical system,
    its own job before S.U.N. (category gpu: the campaign's MLIP on its device)."""

    name: str = "reference relax"
    category: str = "gpu"
    settings: dict[str, Any] = field(default_factory=dict)
    base_dir: str = "."
    metadata: dict[str, Any] = field(default_factory=dict)

    @job(data=["entries"])
    def make(self, relaxed_outputs: list[Any]) -> dict[str, Any]:
        """The reference-relaxation job."""
        return stages.reference_energies(relaxed_outputs, self.settings, self.base_dir)


@dataclass
class HalfMetalDftMaker(Maker):
    """DFT of the best S.U.N. survivors: a fan-out job replaced at run time by one sub-flow per
    survivor (``engine`` gpaw | vasp), routed to ``stages.dft.category`` (default: the cpu one).

    ``gpaw_maker`` (engine gpaw; built from ``settings["gpaw"]`` when not given) is the
    :class:`~smoacs_flows.dft.gpaw_maker.GpawSpinDosMaker` each candidate's GPAW job is made
    from, as ``vasp_maker`` is for VASP.

    ``vasp_maker`` (engine vasp; built from ``settings["vasp"]`` when not given) is the
    :class:`~smoacs_flows.dft.vasp.SpinDOSFlowMaker` every candidate's chain is made from. The
    fan-out job is this Maker's bound method, so atomate2 powerups applied to the submitted
    Flow (``update_user_incar_settings``, ``add_metadata_to_flow``, ...) update its nested VASP
    makers through jobflow's ``update_maker_kwargs`` and reach the jobs made at run time.
    """

    name: str = "dft"
    category: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)  # stages.dft
    metadata: dict[str, Any] = field(default_factory=dict)
    vasp_maker: Maker | None = None
    gpaw_maker: Maker | None = None  # engine gpaw: a GpawSpinDosMaker (from settings["gpaw"])

    def __post_init__(self) -> None:
        if self.gpaw_maker is None and self.settings.get("engine", "gpaw") == "gpaw":
            from smoacs_flows.dft.gpaw_maker import GpawSpinDosMaker

            self.gpaw_maker = GpawSpinDosMaker.from_settings(
                self.settings.get("gpaw") or {}, self.settings.get("analysis") or {}
            )
        if self.vasp_maker is None and self.settings.get("engine") == "vasp":
            from smoacs_flows.dft.vasp import SpinDOSFlowMaker

            self.vasp_maker = SpinDOSFlowMaker.from_settings(
                self.settings.get("vasp") or {},
                self.settings.get("analysis") or {},
                where="stages.dft.vasp",
            )

    def make(self, sun_output: Any) -> Job:
        """The fan-out job; its output (after the run) is ``{"results": [...]}``."""
        j = self.fanout(sun_output)
        j.name = self.name
        # new jobs are routed explicitly; never pass this job's category on to them
        j.config.pass_manager_config = False
        return jobs.route(j, self.category, {**self.metadata, "stage": "dft"})

    @job
    def fanout(self, sun: dict[str, Any]) -> Any:
        """Replace this job by one DFT sub-flow per selected survivor (run time)."""
        return jobs.dft_fanout(
            sun, self.settings, self.category, self.metadata, self.vasp_maker, self.gpaw_maker
        )


def sweep_variants(st: StageSettings) -> list[dict[str, Any]]:
    """The sweep points as ``{"label", "weights"}`` (one unlabelled point without a sweep)."""
    pts = st.orchestration.sweep.points()
    if pts == [{}]:
        return [{"label": "", "weights": {}}]
    return [{"label": f"s{i:02d}", "weights": p} for i, p in enumerate(pts)]


@dataclass
class HalfMetalCampaignMaker(Maker):
    """The whole campaign as one Flow, from a validated :class:`Campaign`.

    Settings come from the campaign's ``stages`` section (:mod:`smoacs_flows.makers.settings`);
    ``categories`` overrides ``stages.orchestration.categories`` when given; ``dft_maker``
    replaces the DFT Maker the campaign's ``stages.dft`` would give (its VASP makers included).
    """

    name: str = "halfmetal campaign"
    categories: Categories | None = None
    validate: bool = True
    dft_maker: HalfMetalDftMaker | None = None  # default: from the campaign's stages.dft

    def make(self, campaign: Campaign) -> Flow:
        """Validate everything a worker would trip on, then build the Flow."""
        st = stage_settings(campaign)
        cats = self.categories or st.orchestration.categories
        variants = sweep_variants(st)
        if self.validate:
            for i, v in enumerate(variants):  # variants differ in loss weights only
                stages.validate_proposal(stages.variant_campaign(campaign, v), templates=i == 0)
            stages.check_references(st.screening.model_dump(), campaign.base_dir)
        screening = st.screening.model_dump()
        # MLIP relaxations run on the campaign's device unless the screening stage names one
        screening["device"] = screening["device"] or campaign.device
        orch = st.orchestration
        meta = {"campaign": campaign.name}
        proposal_flows = [
            SmoacsProposalMaker(
                category=cats.gpu, batches_per_job=orch.batches_per_job, metadata=meta
            ).make(campaign, v)
            for v in variants
        ]
        prop_jobs = [j for f in proposal_flows for j in f.jobs]
        pre = PrefilterMaker(
            category=cats.cpu, settings=screening, policy=campaign.policy, metadata=meta
        )
        rel = MlipRelaxMaker(category=cats.gpu, settings=screening, metadata=meta)
        chunks: list[Job] = []
        for c, start in enumerate(range(0, len(prop_jobs), orch.relax_group)):
            group = prop_jobs[start : start + orch.relax_group]
            p = routed(pre, pre.make([j.output for j in group]), "prefilter", f"prefilter {c:03d}")
            r = routed(rel, rel.make(p.output), "relax", f"relax {c:03d}")
            chunks += [p, r]
        relax_jobs = chunks[1::2]
        refs: list[Job] = []
        if st.screening.references is not None and st.screening.relax_references:
            ref = ReferenceRelaxMaker(
                category=cats.gpu,
                settings=screening,
                metadata=meta,
                base_dir=str(campaign.base_dir),
            )
            refs = [routed(ref, ref.make([r.output for r in relax_jobs]), "references", ref.name)]
        sun_maker = SunFilterMaker(
            category=cats.cpu, settings=screening, metadata=meta, base_dir=str(campaign.base_dir)
        )
        sun = routed(
            sun_maker,
            sun_maker.make([r.output for r in relax_jobs], refs[0].output if refs else None),
            "sun",
            sun_maker.name,
        )
        if self.dft_maker is None:
            dft_maker = HalfMetalDftMaker(category=cats.cpu, settings=st.dft.model_dump())
        else:
            dft_maker = dataclasses.replace(self.dft_maker, category=cats.cpu)
        dft_maker.metadata = {**dft_maker.metadata, **meta}
        dft = dft_maker.make(sun.output)
        summary = jobs.summary_job(sun.output, dft.output, st.dft.e_hull_max)
        summary.name = "summary"
        jobs.route(summary, cats.cpu, {**meta, "stage": "summary"})
        return Flow(
            [*proposal_flows, *chunks, *refs, sun, dft, summary],
            output=summary.output,
            name=f"{campaign.name}",
        )
