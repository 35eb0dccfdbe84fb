"""The registry of named loss terms a campaign combines with weights.

Each term maps a :class:`LossContext` to a per-crystal loss ``(B,)``. Terms that read a
predictor take ``predictor`` (its name in the campaign) and ``property`` (with a default).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from smoacs_flows.errors import SpecError
from smoacs_flows.predictors.base import SoftCrystalBatch

ROLE_IDS = {"A": 0, "B": 1, "X": 2}


@dataclass
class LossContext:
    """What loss terms may read for one evaluation of a batch."""

    batch: SoftCrystalBatch
    #: "<predictor>.<property>" -> (B,) or (N,) tensor
    props: dict[str, torch.Tensor]
    #: (N, P, 98): p(element | pattern) per site
    pattern_probs: torch.Tensor
    #: (B, P): pattern mixing weights
    pattern_weights: torch.Tensor
    #: (N,) role id per site (A=0, B=1, X=2, none=-1)
    roles: torch.Tensor
    #: (N, P, 98) Shannon radius of each element at the site's oxidation number, per pattern
    radii: torch.Tensor | None
    #: (B,) formula units per cell
    formula_units: torch.Tensor
    #: per crystal: its template's family (``templates[].family``), for family-specific rules
    template_families: list[str | None] | None = None
    #: values derived once per context and read by several terms/criteria (tolerance factor)
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def per_crystal_mean(self, site_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of ``site_values`` over the sites where ``mask`` holds, per crystal."""
        b = self.batch.n_crystals
        idx = self.batch.crystal_index
        w = mask.to(site_values.dtype)
        num = torch.zeros(b, dtype=site_values.dtype, device=site_values.device)
        den = torch.zeros_like(num)
        num = num.index_add(0, idx, site_values * w)
        den = den.index_add(0, idx, w)
        return num / den.clamp_min(1.0)


@dataclass
class LossTerm:
    """A weighted, named loss term."""

    name: str
    term: str
    weight: float
    fn: Callable[[LossContext], torch.Tensor]
    #: "<predictor>.<property>" keys the term reads
    reads: list[str] = field(default_factory=list)
    #: success criteria this term implies: {criterion: value}
    implies: dict = field(default_factory=dict)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return self.fn(ctx)


_TERMS: dict[str, Callable[..., LossTerm]] = {}


def register_term(name: str) -> Callable:
    """Decorator registering a loss-term factory under ``name``."""

    def deco(factory: Callable[..., LossTerm]) -> Callable[..., LossTerm]:
        _TERMS[name] = factory
        return factory

    return deco


def available_terms() -> list[str]:
    """Names of every registered loss term."""
    return sorted(_TERMS)


def build_term(spec: dict, index: int = 0) -> LossTerm:
    """Build a term from its campaign spec (a dict with ``term``, ``weight`` and options)."""
    spec = dict(spec)
    where = f"losses[{index}]"
    term = spec.pop("term")
    if term not in _TERMS:
        raise SpecError(
            f"{where}.term: unknown loss term {term!r}; choose from {available_terms()}"
        )
    weight = float(spec.pop("weight", 1.0))
    label = spec.pop("name", None) or term
    factory = _TERMS[term]
    params = inspect.signature(factory).parameters
    spec = {k: v for k, v in spec.items() if v is not None}
    for key in spec:
        if key not in params:
            raise SpecError(f"{where}.{key}: not an option of loss term {term!r}")
    missing = [
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in spec
    ]
    if missing:
        raise SpecError(f"{where}: loss term {term!r} needs {', '.join(missing)}")
    try:
        t = factory(**spec)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None
    t.name, t.weight = label, weight
    return t


def _key(predictor: str, prop: str) -> str:
    return f"{predictor}.{prop}"


def _site_sum(ctx: LossContext, values: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(ctx.batch.n_crystals, dtype=values.dtype, device=values.device)
    return out.index_add(0, ctx.batch.crystal_index, values)


def _crystal_values(ctx: LossContext, key: str) -> torch.Tensor:
    v = ctx.props[key]
    if v.shape[0] != ctx.batch.n_crystals and v.shape[0] == ctx.batch.crystal_index.shape[0]:
        v = _site_sum(ctx, v)
    return v


@register_term("band_gap_hinge")
def band_gap_hinge(
    predictor: str, target: float, margin: float = 0.0, property: str = "band_gap"
) -> LossTerm:
    """max(0, |gap − target| − margin)."""
    k = _key(predictor, property)
    return LossTerm(
        "band_gap_hinge",
        "band_gap_hinge",
        1.0,
        lambda ctx: torch.relu((_crystal_values(ctx, k) - target).abs() - margin),
        [k],
        {"band_gap_window": (target - margin, target + margin), "band_gap_key": k},
    )


@register_term("gapped")
def gapped(predictor: str, property: str = "gapped_logit") -> LossTerm:
    """−log P(gapped) = softplus(−l) from a hurdle gap model's classifier logit ``l``.

    The hinge on the gated gap has no gradient where the sharp gate is shut (gate ≈ 0 gives a
    predicted gap of 0 whatever the geometry); this classifier term keeps pushing toward
    "gapped" there, and fades (→ 0) once the classifier is confident.
    """
    k = _key(predictor, property)
    return LossTerm(
        "gapped",
        "gapped",
        1.0,
        lambda ctx: torch.nn.functional.softplus(-_crystal_values(ctx, k)),
        [k],
        {},
    )


@register_term("formation_energy")
def formation_energy(
    predictor: str,
    mode: str = "minimize",
    threshold: float | None = None,
    property: str = "formation_energy_per_atom",
) -> LossTerm:
    """Formation energy per atom: minimised, or hinged below ``threshold`` (eV/atom)."""
    if mode not in ("minimize", "hinge"):
        raise ValueError("mode must be 'minimize' or 'hinge'")
    if mode == "hinge" and threshold is None:
        raise ValueError("mode 'hinge' needs a threshold")
    k = _key(predictor, property)

    def fn(ctx: LossContext) -> torch.Tensor:
        e = _crystal_values(ctx, k)
        return e if mode == "minimize" else torch.relu(e - threshold)

    implies = {"formation_energy_key": k}
    if threshold is not None:
        implies["formation_energy_max"] = threshold
    return LossTerm("formation_energy", "formation_energy", 1.0, fn, [k], implies)


def tolerance_factor_of(ctx: LossContext) -> torch.Tensor:
    """Goldschmidt t = (r_A + r_X) / (√2 (r_B + r_X)) from expected radii, per crystal.

    Computed once per context (the loss term, the success criteria and the export read it)."""
    if ctx.radii is None:
        raise SpecError("tolerance_factor: the templates have no A/B/X site roles")
    if "tolerance_factor" not in ctx.cache:
        ctx.cache["tolerance_factor"] = _tolerance_factor(ctx)
    return ctx.cache["tolerance_factor"]


def _tolerance_factor(ctx: LossContext) -> torch.Tensor:
    per_pattern = (ctx.pattern_probs * ctx.radii).sum(-1)  # (N, P)
    w = ctx.pattern_weights[ctx.batch.crystal_index]  # (N, P)
    r_site = (per_pattern * w).sum(-1)  # (N,)
    r_a = ctx.per_crystal_mean(r_site, ctx.roles == ROLE_IDS["A"])
    r_b = ctx.per_crystal_mean(r_site, ctx.roles == ROLE_IDS["B"])
    r_x = ctx.per_crystal_mean(r_site, ctx.roles == ROLE_IDS["X"])
    return (r_a + r_x) / (math.sqrt(2.0) * (r_b + r_x))


@register_term("tolerance_factor")
def tolerance_factor(
    target: float | None = 0.9, window: tuple[float, float] | None = None
) -> LossTerm:
    """|t − target|, or the distance of t outside ``window``."""
    if window is not None:
        lo, hi = float(window[0]), float(window[1])

        def fn(ctx: LossContext) -> torch.Tensor:
            t = tolerance_factor_of(ctx)
            return torch.relu(lo - t) + torch.relu(t - hi)

    else:

        def fn(ctx: LossContext) -> torch.Tensor:
            return (tolerance_factor_of(ctx) - target).abs()

    return LossTerm("tolerance_factor", "tolerance_factor", 1.0, fn, [], {"tolerance": True})


@register_term("energy")
def energy(predictor: str, property: str = "energy_per_atom") -> LossTerm:
    """MLIP energy per atom (minimised)."""
    k = _key(predictor, property)
    return LossTerm("energy", "energy", 1.0, lambda ctx: _crystal_values(ctx, k), [k])


#: the moment a property name stands for (docs and error messages)
MOMENT_KINDS = {
    "magmom_total": "net moment (e.g. ALIGNN JARVIS magmom_oszicar)",
    "magmom_abs_total": "sum of moment magnitudes Σ|m_i| (e.g. CHGNet), not a net moment",
    "site_magmoms": "per-site moments",
}


def moment_per_fu(ctx: LossContext, key: str) -> torch.Tensor:
    """The per-cell moment read from ``key`` divided by the formula units per cell."""
    return _crystal_values(ctx, key) / ctx.formula_units


@register_term("magmom_integer")
def magmom_integer(
    predictor: str, property: str = "magmom_total", margin: float = 0.05, tol: float = 0.1
) -> LossTerm:
    """max(0, |m − round(m)| − margin) on the moment per formula unit named by ``property``.

    Half-metals have integer moments per formula unit (Slater–Pauling). The seed's term acts on
    the *net* moment (``magmom_total``, ALIGNN JARVIS magmom); with CHGNet it can only act on
    Σ|m_i| (``magmom_abs_total``). ``margin`` defaults to seed 000's constant 0.05 (eq. 12);
    ``tol`` is the success criterion's tolerance.
    """
    k = _key(predictor, property)

    def fn(ctx: LossContext) -> torch.Tensor:
        m = moment_per_fu(ctx, k)
        return torch.relu((m - torch.round(m.detach())).abs() - margin)

    return LossTerm(
        "magmom_integer",
        "magmom_integer",
        1.0,
        fn,
        [k],
        {"magmom_key": k, "magmom_integer_tol": tol},
    )


@register_term("magmom_min")
def magmom_min(predictor: str, minimum: float = 1.0, property: str = "magmom_total") -> LossTerm:
    """max(0, minimum − m) on the moment per formula unit named by ``property`` (net moment
    ``magmom_total``, or CHGNet's Σ|m_i| ``magmom_abs_total``): keeps candidates magnetic."""
    k = _key(predictor, property)
    return LossTerm(
        "magmom_min",
        "magmom_min",
        1.0,
        lambda ctx: torch.relu(minimum - moment_per_fu(ctx, k)),
        [k],
        {"magnetic_key": k, "magmom_min": minimum},
    )


@register_term("magmom_nonnegative")
def magmom_nonnegative(predictor: str, property: str = "magmom_total") -> LossTerm:
    """max(0, −M) on the predicted net moment per cell (seed 000: keeps M in the non-negative
    range of the training data), or Σ_i max(0, −m_i) for a per-site property. Zero for CHGNet,
    whose moments are magnitudes."""
    k = _key(predictor, property)

    def fn(ctx: LossContext) -> torch.Tensor:
        v = ctx.props[k]
        neg = torch.relu(-v)
        return _site_sum(ctx, neg) if v.shape[0] != ctx.batch.n_crystals else neg

    return LossTerm("magmom_nonnegative", "magmom_nonnegative", 1.0, fn, [k])


@register_term("element_reduction")
def element_reduction() -> LossTerm:
    """Σ_z sqrt(c_z) − 1 over the crystal's mean occupation c (0 for a single element).

    A plain L1 norm of a probability distribution is constant (1), so the sparsity-inducing
    L½ quasi-norm of the crystal-level composition is used: it falls as elements drop out.
    """

    def fn(ctx: LossContext) -> torch.Tensor:
        probs = ctx.batch.element_probs
        b = ctx.batch.n_crystals
        comp = torch.zeros(b, probs.shape[1], dtype=probs.dtype, device=probs.device)
        comp = comp.index_add(0, ctx.batch.crystal_index, probs)
        comp = comp / ctx.batch.n_sites.unsqueeze(1).to(probs.dtype)
        return torch.sqrt(comp + 1e-12).sum(-1) - 1.0

    return LossTerm("element_reduction", "element_reduction", 1.0, fn, [])


@register_term("metallicity")
def metallicity(predictor: str, property: str = "band_gap", margin: float = 0.01) -> LossTerm:
    """max(0, gap − margin): pulls the predicted gap to zero (``margin`` defaults to seed
    000's constant 0.01 eV, eq. 11)."""
    k = _key(predictor, property)
    return LossTerm(
        "metallicity",
        "metallicity",
        1.0,
        lambda ctx: torch.relu(_crystal_values(ctx, k) - margin),
        [k],
    )


@register_term("volume_per_atom")
def volume_per_atom(target: float, margin: float = 0.0) -> LossTerm:
    """max(0, |V/N − target| − margin), Å³/atom: keeps cells at a sensible density."""

    def fn(ctx: LossContext) -> torch.Tensor:
        v = ctx.batch.volumes() / ctx.batch.n_sites.to(ctx.batch.lattice.dtype)
        return torch.relu((v - target).abs() - margin)

    return LossTerm("volume_per_atom", "volume_per_atom", 1.0, fn, [])


# terms defined in their own modules register themselves on import
from smoacs_flows.smoacs import slater_pauling as _slater_pauling  # noqa: E402,F401
