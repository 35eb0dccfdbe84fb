"""Plain-Python stage functions the jobs call: thin adapters over the stage packages.

Each takes and returns JSON-able data (candidate records, see docs/architecture.md), so a job's
output can live in any JobStore. The screening funnel of ``screening.pipeline.screen`` runs in
one process; here it is cut at the job boundaries (prefilter per chunk, relaxation per chunk,
S.U.N. once per campaign because uniqueness is global) from the screening package's public
pieces: ``prefilter_one``, ``relax``, ``Hull``/``mlip_entry``/``mlip_reference_entries`` and
``unique_and_novel``.

This module holds the per-chunk stages (propose, prefilter, relax); the S.U.N. stage and its
reference phases are in :mod:`~smoacs_flows.makers.stages_sun`, the DFT selection, GPAW run and
summary in :mod:`~smoacs_flows.makers.stages_dft`, shared helpers in
:mod:`~smoacs_flows.makers.stages_common`; all are re-exported here (``stages.sun_filter`` ...).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

from smoacs_flows.config import software_versions
from smoacs_flows.makers.settings import ScreeningSettings
from smoacs_flows.makers.stages_common import (
    as_structure,
    campaign_from_payload,
    campaign_payload,
    check_predictors,
    merge_counts,
    mlip_relax,
    n_batches,
    validate_proposal,
    variant_campaign,
)
from smoacs_flows.makers.stages_dft import (
    dft_structure,
    format_summary,
    rank_key,
    run_gpaw,
    select_for_dft,
    summarise,
)
from smoacs_flows.makers.stages_sun import (
    _references,
    check_references,
    reference_energies,
    reference_label,
    reference_source,
    sun_filter,
)

__all__ = [
    "_references",
    "as_structure",
    "campaign_from_payload",
    "campaign_payload",
    "check_predictors",
    "check_references",
    "dft_structure",
    "format_summary",
    "n_batches",
    "prefilter",
    "propose",
    "rank_key",
    "reference_energies",
    "reference_label",
    "reference_source",
    "relax",
    "run_gpaw",
    "select_for_dft",
    "summarise",
    "sun_filter",
    "validate_proposal",
    "variant_campaign",
]


def propose(
    payload: dict[str, Any], batch_indices: list[int], variant: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Optimise the given batches of a (variant) campaign; returns records and counts."""
    from smoacs_flows.provenance import code_version, predictor_weights
    from smoacs_flows.smoacs.propose import ProposalRun

    base = campaign_from_payload(payload)
    camp = variant_campaign(base, variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # validated at submit time: resolve only the templates these batches use
        res = ProposalRun(camp, lazy_templates=True).run(batch_indices=batch_indices)
    for r in res.records:
        r["campaign"] = base.name
        if variant and variant.get("weights"):
            r["variant"] = variant["label"]
            r["sweep"] = dict(variant["weights"])
    return {
        "records": res.records,
        "dropped": res.dropped,
        "stats": res.stats,
        "counts": {"proposed": len(res.records) + len(res.dropped), "exported": len(res.records)},
        "versions": software_versions(),
        "batches": list(batch_indices),
        "variant": (variant or {}).get("label"),
        # per batch, per step: (mean, min) total loss of the batch (the report's loss curves)
        "history": {str(b): [list(p) for p in h] for b, h in res.history.items()},
        "provenance": {"code": code_version(), "predictors": predictor_weights(camp.predictors)},
    }


def prefilter(
    proposal_outputs: list[dict[str, Any]], settings: dict[str, Any], policy: str
) -> dict[str, Any]:
    """Prefilter the records of one or more proposal jobs."""
    from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one

    st = ScreeningSettings.model_validate(settings).prefilter
    pol = policy if st.neutrality_policy == "campaign" else st.neutrality_policy
    cfg = PrefilterConfig(
        band_gap_max=st.band_gap_max,
        band_gap_key=st.band_gap_key,
        max_elements=st.max_elements,
        min_distance=st.min_distance,
        neutrality_policy=pol,
    )
    kept, rejected, reasons = [], {}, Counter()
    n_in = 0
    for out in proposal_outputs:
        for rec in out["records"]:
            n_in += 1
            why = prefilter_one(rec, as_structure(rec["structure"]), cfg)
            if why:
                rejected[rec["id"]] = why
                reasons.update(why)
            else:
                kept.append(rec)
    counts = merge_counts(proposal_outputs)
    counts["prefiltered"] = len(kept)
    return {"records": kept, "rejected": rejected, "reasons": dict(reasons), "counts": dict(counts)}


def relax(prefiltered: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """MLIP-relax one chunk of prefiltered records (screening.relax)."""
    from smoacs_flows.screening.symmetry import relaxation_change

    st = ScreeningSettings.model_validate(settings)
    records = prefiltered["records"]
    structs = [as_structure(r["structure"]) for r in records]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mlip_relax(st, structs)
    moments: dict[int, list[float]] = {}
    if st.mlip == "chgnet":  # site-moment magnitudes of the relaxed cells (DFT ranking)
        from smoacs_flows.screening.halfmetal_rank import chgnet_site_moments

        ok = [i for i, r in enumerate(res) if r.ok]
        moments = dict(zip(ok, chgnet_site_moments([res[i].structure for i in ok])))
    kept, rejected = [], {}
    for i, (rec, r) in enumerate(zip(records, res)):
        if not r.ok:
            rejected[rec["id"]] = [f"relaxation failed: {r.error}"]
            continue
        rec = dict(rec)
        rec["screening"] = {
            "mlip": st.mlip,
            "relaxed": r.structure.as_dict(),
            "mlip_energy_per_atom": r.energy_per_atom,
            "relax_converged": r.converged,
            "relax_steps": r.steps,
            "relax_wall_time": r.wall_time,
        }
        rec["screening"].update(relaxation_change(structs[i], r.structure))
        if i in moments:
            rec["screening"]["mlip_site_magmoms"] = moments[i]
        kept.append(rec)
    counts = dict(prefiltered.get("counts", {}))
    counts["relaxed"] = len(kept)
    # ``rejected`` accumulates the funnel so far; ``stage_rejected`` is this stage's own
    return {
        "records": kept,
        "rejected": {**prefiltered.get("rejected", {}), **rejected},
        "stage_rejected": rejected,
        "counts": counts,
        "versions": software_versions(),
    }
