"""Typed settings of the workflow stages, kept in the campaign's free-form ``stages`` section.

The defaults (``tests/makers/test_stage_keys.py`` checks this block against the models)::

```yaml
stages:
  screening:   {mlip: chgnet, fmax: 0.05, steps: 300, e_hull_max: 0.1, references: null}
  dft:         {engine: gpaw, max_candidates: 2, category: null, gpaw: {ecut: 300.0}}
  # or engine: vasp, vasp: {incar: {ENCUT: 600}, magmom: mp, relax_static_maker: ...}
  orchestration:
    categories: {gpu: gpu, cpu: cpu}
    batches_per_job: 1        # optimiser batches per proposal job
    relax_group: 1            # proposal jobs feeding one prefilter + relaxation chunk
    sweep: {mode: grid, weights: {magmom_integer: [1, 10, 100]}}
```

Every section forbids unknown keys, and so does ``stages`` itself (a typo such as
``screenning:`` is an error, not a stage left at its defaults); numbers are not coerced from
booleans or strings; errors name the field path (``stages.dft.engine: ...``).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from smoacs_flows.campaign import Campaign
from smoacs_flows.errors import SpecError
from smoacs_flows.screening.methods import (
    DEFAULT_METHOD,
    DEFAULT_OPTIMIZER,
    METHODS,
    OPTIMIZER_NAMES,
)
from smoacs_flows.strict import StrictModel

#: a FireWorks category: a plain name (it also names queue folders and log files)
CATEGORY = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(StrictModel):
    """Unknown keys forbidden, numbers not coerced from booleans or strings."""


class PrefilterSettings(_Strict):
    """Cheap checks before any MLIP call (see ``screening.prefilter.PrefilterConfig``)."""

    band_gap_max: float | None = None
    band_gap_key: str | None = None
    max_elements: int | None = 5
    min_distance: float | None = 0.5
    neutrality_policy: str | None = Field(
        "campaign", description="'campaign' (the campaign's policy), a policy name, or null"
    )


class ScreeningSettings(_Strict):
    """Prefilter, MLIP relaxation and S.U.N. settings."""

    prefilter: PrefilterSettings = PrefilterSettings()
    mlip: Literal["chgnet", "mattersim"] = "chgnet"
    method: Literal[METHODS] = Field(  # type: ignore[valid-type] # Literal of the tuple
        DEFAULT_METHOD,
        description="relaxation engine: torchsim (torch-sim's batched FIRE, the default), "
        "batched (ours: lockstep ASE optimisers; BFGS runs here) or atomate2",
    )
    fmax: float = Field(0.05, gt=0, le=10, description="force tolerance, eV/Å")
    steps: int = Field(300, ge=1, le=100_000)
    optimizer: Literal[OPTIMIZER_NAMES] = DEFAULT_OPTIMIZER  # type: ignore[valid-type]
    e_hull_max: float = Field(0.1, ge=0, le=10, description="eV/atom")
    references: str | None = Field(
        None,
        description="JSON(.gz) file of ComputedEntries, 'store' (reference store), "
        "'mp-elements' (shipped MP elemental references: stability against the elements), "
        "'mp-or-elements' (MP phases with MP_API_KEY, else the shipped elements) or null",
    )
    reference_sources: list[Literal["mp", "alexandria"]] = Field(
        default_factory=list,
        description="with references: store, fetch the campaign's chemical systems from these "
        "sources into the reference store at S.U.N. time (once per system; mp needs MP_API_KEY)",
    )
    relax_references: bool = Field(
        True, description="MLIP-relax the reference phases (its own gpu job before S.U.N.)"
    )
    prototype_phases: bool | None = Field(
        None,
        description="add MLIP-relaxed prototype phases (elemental, binary, ternary structure "
        "types decorated with each candidate system's elements) to the hull; null: on when "
        "the reference set is the elements only (the offline default), off otherwise; needs "
        "relax_references",
    )
    novelty_references: str | None = Field(
        None,
        description="your own known structures for the novelty check, beside the hull's: a "
        "folder of CIFs or a proposals-style JSONL file (relative to the campaign)",
    )
    n_jobs: int = Field(1, ge=1, le=1024, description="processes for structure matching")
    device: str | None = Field(
        None, description="torch device of the MLIP relaxations (null: the campaign's device)"
    )
    mattersim_model: str | None = Field(
        None,
        description="MatterSim checkpoint: a file or a released name found in MatterSim's "
        "cache (null: $SMOACS_MATTERSIM_CHECKPOINT, else MatterSim-v1.0.0-1M)",
    )

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v: str | None) -> str | None:
        if v in (None, "auto"):
            return v
        import torch

        try:
            torch.device(v)
        except (RuntimeError, TypeError):
            raise ValueError(f"{v!r} is not a torch device (auto, cpu, cuda, cuda:1)") from None
        return v

    @model_validator(mode="after")
    def _sources_need_store(self) -> ScreeningSettings:
        if self.reference_sources and self.references != "store":
            raise ValueError("reference_sources needs references: store")
        return self


class DftSettings(_Strict):
    """DFT of the S.U.N. survivors (one sub-flow per survivor)."""

    engine: Literal["gpaw", "vasp"] = "gpaw"
    max_candidates: int | None = Field(
        2, ge=0, description="survivors sent to DFT (best first); null: every survivor"
    )
    rank_by: Literal["e_above_hull", "mlip_energy_per_atom", "loss", "halfmetal"] = Field(
        "e_above_hull",
        description="halfmetal: magnetic, near-integer moment, few elements, low energy "
        "(screening.halfmetal_rank)",
    )
    symprec: float | None = Field(
        0.1,
        gt=0,
        description="symmetrise the MLIP-relaxed structure within this tolerance "
        "(Å; primitive standard cell) before DFT, so the DFT code can use its symmetry; "
        "null: keep it as relaxed",
    )
    category: str | None = Field(
        None, pattern=CATEGORY, description="FireWorks category (default: the cpu one)"
    )
    e_hull_max: float | None = Field(
        None,
        description="the funnel's last step: DFT half-metals within this DFT hull distance "
        "(eV/atom; VASP against the MP + Alexandria reference store); null: no such step",
    )
    gpaw: dict[str, Any] = Field(default_factory=dict, description="GPAWSettings fields")
    vasp: dict[str, Any] = Field(
        default_factory=dict,
        description="VaspChainSettings: incar, kpoints, potcar_functional, magmom, makers, ...",
    )
    analysis: dict[str, Any] = Field(default_factory=dict, description="AnalysisSettings")


class Categories(_Strict):
    """FireWorks categories: proposal + relaxation run on ``gpu``, everything else on ``cpu``."""

    gpu: str = Field("gpu", pattern=CATEGORY)
    cpu: str = Field("cpu", pattern=CATEGORY)


class SweepSettings(_Strict):
    """A declarative sweep of loss weights: each point is a campaign variant."""

    mode: Literal["grid", "zip"] = "grid"
    weights: dict[str, list[float]] = Field(
        default_factory=dict, description="loss term name -> weights to try"
    )

    @field_validator("weights")
    @classmethod
    def _non_empty(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"{k}: needs at least one weight")
        return v

    def points(self) -> list[dict[str, float]]:
        """The sweep points, ``[{term name: weight}]`` (one empty point without a sweep)."""
        if not self.weights:
            return [{}]
        names = list(self.weights)
        if self.mode == "zip":
            lens = {len(v) for v in self.weights.values()}
            if len(lens) != 1:
                raise SpecError("stages.orchestration.sweep: zip mode needs equal-length lists")
            combos = zip(*self.weights.values())
        else:
            combos = itertools.product(*self.weights.values())
        return [dict(zip(names, c)) for c in combos]


class OrchestrationSettings(_Strict):
    """How the campaign is cut into jobs and routed."""

    categories: Categories = Categories()
    batches_per_job: int = Field(
        1, ge=1, le=100_000, description="optimiser batches per proposal job"
    )
    relax_group: int = Field(1, ge=1, le=100_000, description="proposal jobs per relaxation chunk")
    sweep: SweepSettings = SweepSettings()


class StageSettings(_Strict):
    """Everything after the proposal stage."""

    screening: ScreeningSettings = ScreeningSettings()
    dft: DftSettings = DftSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()


def stage_settings(campaign: Campaign) -> StageSettings:
    """Validate ``campaign.stages``; an error names the field (``stages.dft.engine``)."""
    known = ("screening", "dft", "orchestration")
    for key in campaign.stages:
        if key not in known:
            import difflib

            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise SpecError(
                f"campaign {campaign.name}: stages.{key}: unknown stage (known: "
                f"{', '.join(known)}){hint}"
            )
    data = dict(campaign.stages)
    try:
        st = StageSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise SpecError(
            f"campaign {campaign.name}: stages.{loc}: {err['msg'].removeprefix('Value error, ')}"
        ) from None
    # deeper checks of engine settings, so a typo fails at submit time, not on a worker
    from smoacs_flows.dft.analysis import AnalysisSettings

    models: list[tuple[str, Any, dict]] = [("analysis", AnalysisSettings, st.dft.analysis)]
    if st.dft.engine == "gpaw":
        from smoacs_flows.dft.gpaw_engine import GPAWSettings

        models.append(("gpaw", GPAWSettings, st.dft.gpaw))
    for sec, model, values in models:
        bad = sorted(set(values) - set(model.model_fields))
        if bad:
            raise SpecError(
                f"campaign {campaign.name}: stages.dft.{sec}.{bad[0]}: unknown "
                f"setting (known: {', '.join(model.model_fields)})"
            )
    try:
        for _, model, values in models:
            model(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        sec = "analysis" if "Analysis" in exc.title else st.dft.engine
        raise SpecError(f"campaign {campaign.name}: stages.dft.{sec}.{loc}: {err['msg']}") from None
    if st.dft.engine == "vasp":
        from smoacs_flows.dft.vasp import SpinDOSFlowMaker

        try:  # builds the makers: import paths and their kwargs fail here, not on a worker
            SpinDOSFlowMaker.from_settings(st.dft.vasp, st.dft.analysis, where="stages.dft.vasp")
        except SpecError as exc:
            raise SpecError(f"campaign {campaign.name}: {exc}") from None
    terms = {loss.name or loss.term for loss in campaign.losses}
    for name in st.orchestration.sweep.weights:
        if name not in terms:
            raise SpecError(
                f"campaign {campaign.name}: stages.orchestration.sweep.weights.{name}: no loss "
                f"term of that name (have {', '.join(sorted(terms))})"
            )
    st.orchestration.sweep.points()  # zip-length check
    return st
