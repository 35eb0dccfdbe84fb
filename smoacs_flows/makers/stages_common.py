"""Shared pieces of the stage functions: structures and campaigns as JSON-able job arguments,
the proposal's submit-time checks, funnel-count merging and the MLIP relaxation call."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from smoacs_flows.campaign import Campaign, campaign_from_dict
from smoacs_flows.errors import SpecError
from smoacs_flows.makers.settings import ScreeningSettings


def as_structure(obj: Structure | dict[str, Any]) -> Structure:
    """A Structure from a Structure or its dict (job inputs arrive decoded or not)."""
    return obj if isinstance(obj, Structure) else Structure.from_dict(obj)


def campaign_payload(campaign: Campaign) -> dict[str, Any]:
    """The campaign as a JSON-able job argument (``base_dir`` travels beside it)."""
    return {"spec": campaign.model_dump(mode="json"), "base_dir": str(campaign.base_dir)}


def campaign_from_payload(payload: dict[str, Any]) -> Campaign:
    """Inverse of :func:`campaign_payload`."""
    return campaign_from_dict(
        payload["spec"], source="campaign", base_dir=Path(payload["base_dir"])
    )


def variant_campaign(campaign: Campaign, variant: dict[str, Any] | None) -> Campaign:
    """The campaign with a sweep point's loss weights; its name (id prefix) gets the label."""
    if not variant or not variant.get("weights"):
        return campaign
    data = campaign.model_dump(mode="json")
    for loss in data["losses"]:
        key = loss.get("name") or loss["term"]
        if key in variant["weights"]:
            loss["weight"] = float(variant["weights"][key])
    data["name"] = f"{campaign.name}.{variant['label']}"
    return campaign_from_dict(
        data, source=f"campaign variant {variant['label']}", base_dir=campaign.base_dir
    )


def n_batches(campaign: Campaign) -> int:
    """Number of optimiser batches (as ``ProposalRun.batches``)."""
    sch = campaign.schedule
    return math.ceil(sch.n_candidates / sch.batch_size)


def validate_proposal(campaign: Campaign, templates: bool = True) -> int:
    """Everything the proposal stage checks before optimising (templates, patterns, terms),
    without loading any predictor; returns the number of batches. ``templates`` False skips
    the per-template pattern checks (sweep variants share the first variant's templates)."""
    from smoacs_flows.smoacs.propose import ProposalRun

    check_predictors(campaign)
    # predictors and not-yet-cached remote templates are resolved on the worker, at run time
    run = ProposalRun(campaign, predictors={}, remote_templates=False, lazy_templates=not templates)
    return len(run.batches)


def check_predictors(campaign: Campaign) -> None:
    """Predictor types exist and their options are accepted by the factory (no model load).

    Reads the predictor registry of ``predictors.base`` (no public listing exists yet).
    """
    import importlib
    import inspect

    from smoacs_flows.predictors import base

    for name, spec in campaign.predictors.items():
        kind = spec.get("type")
        factory = base._REGISTRY.get(kind)
        if factory is None:
            raise SpecError(
                f"predictors.{name}.type: {kind!r} is unknown; choose one of "
                f"{sorted(base._REGISTRY)}"
            )
        if isinstance(factory, str):
            module, func = factory.split(":")
            factory = getattr(importlib.import_module(module), func)
        params = inspect.signature(factory).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        bad = sorted(set(spec) - {"type"} - set(params))
        if bad:
            raise SpecError(
                f"predictors.{name}.{bad[0]}: not an option of the {kind} predictor "
                f"(options: {', '.join(k for k in params if k != 'device')})"
            )


def merge_counts(outputs: list[dict[str, Any]]) -> Counter:
    """The funnel counts of several stage outputs, summed."""
    c: Counter = Counter()
    for o in outputs:
        c.update(o.get("counts", {}))
    return c


def mlip_relax(st: ScreeningSettings, structs: list[Structure]) -> list[Any]:
    """MLIP-relax ``structs`` with the campaign's screening settings (``screening.relax``)."""
    from smoacs_flows.screening.relax import relax as relax_structures

    return relax_structures(
        structs,
        st.mlip,
        st.method,
        st.fmax,
        st.steps,
        st.optimizer,
        device=st.device,
        model=st.mattersim_model,
    )
