"""The campaign specification: one YAML file, validated with pydantic.

Every section forbids unknown keys, so a typo is reported with its field path rather than
silently ignored. See campaigns/*.yaml for complete examples and docs/campaign.md for reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smoacs_flows.errors import SpecError
from smoacs_flows.strict import StrictModel

#: upper bounds that keep a typo (an extra zero or ten) from running for ever
MAX_STEPS = 100_000
MAX_CANDIDATES = 1_000_000
MAX_SEED = 2**32 - 1
MAX_LENGTH = 1000.0  # Å
MAX_SUPERCELL = 10
MAX_LR = 100.0  # the seeds' largest rate is 9.0 (perovskite lattice)
MAX_NAME = 100  # characters: names become folder and file names


def _check_range(v: tuple[float, float] | None) -> tuple[float, float] | None:
    if v is not None and not (0 < v[0] < v[1] <= MAX_LENGTH):
        raise ValueError(f"must be (min, max) with 0 < min < max <= {MAX_LENGTH:g} Å")
    return v


class _Strict(StrictModel):
    """Unknown keys forbidden, numbers not coerced from booleans or strings."""


class TemplateSpec(_Strict):
    """A source of templates: ``perovskite`` (synthetic), ``mp`` (the Materials Project) or a
    structure file/folder path."""

    source: str = Field(description="'perovskite', 'mp' or a CIF/JSON/POSCAR file or folder")
    count: int = Field(1, ge=1, le=10_000, description="number of random synthetic templates")
    length_range: tuple[float, float] | None = Field(
        None, description="allowed lattice lengths (Å) of the unit template"
    )
    supercell: tuple[int, int, int] = (1, 1, 1)
    patterns: list[list[int]] | None = Field(
        None,
        description="explicit oxidation patterns: one number per site, or (A, B, X) for "
        "perovskites",
    )
    formula_units: int = Field(1, ge=1, le=10_000)
    # source: mp (see smoacs/mp_templates.py)
    max_sites: int | None = Field(None, ge=1, le=10_000, description="mp: at most this many sites")
    n: int | None = Field(
        None, ge=1, le=100_000, description="mp: templates drawn (seeded) from the matches"
    )
    criteria: dict[str, Any] | None = Field(
        None, description="mp: keyword arguments of mp-api's materials.summary.search"
    )
    cache: str | None = Field(
        None, description="mp: cache file (default $SMOACS_HOME/templates/mp/<digest>.json.gz)"
    )
    family: str | None = Field(
        None, description="structure family (e.g. full_heusler) for family rules: Slater–Pauling"
    )

    @model_validator(mode="after")
    def _mp_only(self) -> TemplateSpec:
        if self.source != "mp":
            for key in ("max_sites", "n", "criteria", "cache"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} applies to source: mp only")
        return self

    @field_validator("length_range")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return _check_range(v)

    @field_validator("supercell")
    @classmethod
    def _supercell(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(n < 1 or n > MAX_SUPERCELL for n in v):
            raise ValueError(f"supercell multipliers must be between 1 and {MAX_SUPERCELL}")
        return v


class AngleSpec(_Strict):
    """Lattice angles: optimised within ``range`` or fixed at the template's values."""

    fixed: bool = False
    range: tuple[float, float] = (30.0, 150.0)

    @field_validator("range")
    @classmethod
    def _angles(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] < v[1] < 180):
            raise ValueError("must be (min, max) degrees with 0 < min < max < 180")
        return v


class CoordSpec(_Strict):
    """Fractional coordinates: ``free`` (wrapped into [0, 1)) or ``bounded`` (±epsilon)."""

    mode: Literal["free", "bounded"] = "free"
    epsilon: float = Field(0.15, gt=0, le=0.5)


class GeometrySpec(_Strict):
    """Geometry parametrisation."""

    angles: AngleSpec = AngleSpec()
    coords: CoordSpec = CoordSpec()
    length_range: tuple[float, float] = Field(
        (2.0, 30.0), description="default allowed lattice lengths (Å) when a template has none"
    )

    @field_validator("length_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v)


class LossSpec(BaseModel):
    """One weighted loss term; term-specific options are extra keys (validated per term)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    term: str
    weight: float = 1.0
    predictor: str | None = None
    property: str | None = None
    name: str | None = Field(None, description="label in records (default: the term name)")


class LearningRates(_Strict):
    """Adam learning rate per parameter group (0 freezes the group)."""

    lengths: float = Field(0.01, ge=0, le=MAX_LR)
    angles: float = Field(0.01, ge=0, le=MAX_LR)
    coords: float = Field(0.01, ge=0, le=MAX_LR)
    elements: float = Field(0.01, ge=0, le=MAX_LR)
    patterns: float = Field(0.01, ge=0, le=MAX_LR)


class TemperatureSpec(_Strict):
    """Softmax temperature, decaying linearly from ``start`` to ``end``."""

    start: float = Field(0.01, gt=0)
    end: float = Field(0.0001, gt=0)


class MutationSpec(_Strict):
    """Mutation (see docs/campaign.md): at ``steps``, refill the worst group from the best."""

    steps: list[int] = []
    top_fraction: float = Field(0.2, ge=0, le=1, description="group B: best fraction by loss")
    rate: float = Field(0.5, ge=0, le=1, description="probability a group-C member is replaced")
    noise: float = Field(0.02, ge=0, description="relative noise on copied lengths/coordinates")
    donors: Literal["batch", "template"] = Field(
        "batch",
        description="donor pool: the whole batch (the seed; a copy adopts its donor's template, "
        "same site count) or only candidates grown from the same template",
    )


class AnnealingSpec(_Strict):
    """Simulated annealing after ``start_step`` (None = off)."""

    start_step: int | None = None
    t0: float = Field(0.1, gt=0)
    tmin: float = Field(0.001, gt=0)
    trials: int = Field(4, ge=1, le=1000)
    coord_step: float = Field(0.02, gt=0, description="fractional-coordinate noise")
    length_step: float = Field(0.02, gt=0, description="relative length noise")
    angle_step: float = Field(2.0, gt=0, description="angle noise, degrees")
    keep: Literal["current", "best"] = Field(
        "current",
        description="after each SA step keep the Metropolis current state (the seed's "
        "gradient + SA hybrid: accepted uphill moves survive) or copy the best state back",
    )


class RefreshSpec(_Strict):
    """Neighbour-graph refreshes for predictors whose graph is not differentiable."""

    count: int = Field(8, ge=0, le=MAX_STEPS)


class ScheduleSpec(_Strict):
    """Optimisation schedule."""

    steps: int = Field(200, ge=1, le=MAX_STEPS)
    n_candidates: int = Field(64, ge=1, le=MAX_CANDIDATES)
    batch_size: int = Field(64, ge=1, le=MAX_CANDIDATES)
    lr: LearningRates = LearningRates()
    temperature: TemperatureSpec = TemperatureSpec()
    logit_floor: float = Field(0.0, description="element logits are clipped below at this")
    outer_softmax: bool = Field(
        False,
        description="seed 001 eq. 9: a second temperature softmax over the oxidation-pattern "
        "mixture of each site's distribution (see docs/campaign.md)",
    )
    mutation: MutationSpec = MutationSpec()
    annealing: AnnealingSpec = AnnealingSpec()
    graph_refresh: RefreshSpec = RefreshSpec()


class SuccessSpec(_Strict):
    """Success windows; unset windows are derived from the loss terms where possible."""

    band_gap_window: tuple[float, float] | None = None
    formation_energy_max: float | None = None
    tolerance_window: tuple[float, float] | None = None
    min_distance: float = 0.5
    magmom_integer_tol: float | None = None
    max_elements: int | None = None


class Campaign(_Strict):
    """A SMOACS campaign."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME)
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', ...")
    templates: list[TemplateSpec] = Field(min_length=1)
    policy: str = Field("ionic", description="'ionic', 'ionic+metallic' or a table file")
    max_patterns: int = Field(100, ge=1, le=100_000)
    exclude: list[str] = []
    predictors: dict[str, dict[str, Any]] = {}
    losses: list[LossSpec] = Field(min_length=1)
    geometry: GeometrySpec = GeometrySpec()
    schedule: ScheduleSpec = ScheduleSpec()
    success: SuccessSpec = SuccessSpec()
    #: later stages (screening, DFT, orchestration) keep their own sections here
    stages: dict[str, Any] = {}

    #: directory of the YAML file, for resolving relative paths
    base_dir: Path = Field(Path("."), exclude=True)

    @model_validator(mode="after")
    def _cross_check(self) -> Campaign:
        for name, spec in self.predictors.items():
            if not isinstance(spec, dict) or "type" not in spec:
                raise ValueError(f"predictors.{name}: needs a 'type' (e.g. chgnet, alignn)")
            if not isinstance(spec["type"], str):
                raise ValueError(f"predictors.{name}.type: must be a name (e.g. chgnet, alignn)")
        for i, loss in enumerate(self.losses):
            if loss.predictor is not None and loss.predictor not in self.predictors:
                raise ValueError(
                    f"losses[{i}].predictor: {loss.predictor!r} is not defined under predictors"
                )
        return self

    def resolve(self, path: str | Path) -> Path:
        """A path from the spec, relative to the YAML file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


def _format_validation_error(source: str, exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def campaign_from_dict(
    data: Any, source: str = "campaign", base_dir: Path | None = None
) -> Campaign:
    """Validate a campaign mapping; errors name the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level")
    try:
        camp = Campaign.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(source, exc)) from None
    if base_dir is not None:
        camp.base_dir = base_dir
    return camp


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign YAML file (safe loader)."""
    from smoacs_flows.io import load_yaml

    path = Path(path)
    data = load_yaml(path, "campaign file", SpecError)
    return campaign_from_dict(data, source=str(path), base_dir=path.parent.resolve())
