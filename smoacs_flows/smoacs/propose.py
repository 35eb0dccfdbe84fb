"""Run the proposal stage of a campaign: templates → optimised batches → candidate records."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.campaign import Campaign
from smoacs_flows.errors import SpecError
from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch, build_predictor
from smoacs_flows.smoacs.elements import N_ELEMENTS
from smoacs_flows.smoacs.engine import EngineSettings, Evaluator, SmoacsOptimizer
from smoacs_flows.smoacs.exclusions import exclusion_mask
from smoacs_flows.smoacs.losses import LossContext, LossTerm, build_term, tolerance_factor_of
from smoacs_flows.smoacs.oxidation import (
    OxidationTable,
    count_patterns,
    is_charge_neutral,
    load_policy,
)
from smoacs_flows.smoacs.state import CandidateState
from smoacs_flows.smoacs.template_set import PreparedTemplates, build_templates

log = logging.getLogger(__name__)

CRITERIA = (
    "gap_window",
    "formation_energy",
    "tolerance",
    "magmom_integer",
    "magnetic",
    "neutral",
    "template_preserved",
    "min_distance",
    "max_elements",
)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        from smoacs_flows.config import note_cpu_fallback

        note_cpu_fallback("the SMOACS proposal")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SpecError(f"device: {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("device: 'cuda' was asked for but no CUDA device is available")
    return dev


#: properties a predictor type is known to lack, with what to use instead
_RENAMED = {
    ("chgnet", "magmom_total"): (
        "magmom_abs_total",
        "CHGNet predicts moment magnitudes, so its total is Σ|m_i|, not a net moment",
    ),
}


def check_term_properties(
    campaign: Campaign, terms: list[LossTerm], predictors: dict[str, Predictor] | None = None
) -> None:
    """Every ``<predictor>.<property>`` a loss term reads exists; errors name the loss.

    Known renames (CHGNet's ``magmom_total`` → ``magmom_abs_total``) are caught from the
    predictor type alone, without loading a model; with loaded ``predictors`` every property
    is checked against what the predictor declares.
    """
    for i, term in enumerate(terms):
        for key in term.reads:
            name, prop = key.split(".", 1)
            kind = (campaign.predictors.get(name) or {}).get("type")
            if (kind, prop) in _RENAMED:
                new, why = _RENAMED[(kind, prop)]
                raise SpecError(
                    f"losses[{i}].property: {kind} predictor {name!r} has no {prop!r}: {why}; "
                    f"set 'property: {new}' (or use a net-moment predictor such as ALIGNN "
                    "JARVIS magmom)"
                )
            pred = (predictors or {}).get(name)
            if pred is not None and pred.properties and prop not in pred.properties:
                raise SpecError(
                    f"losses[{i}].property: predictor {name!r} has no property {prop!r} "
                    f"(it predicts {', '.join(sorted(pred.properties))})"
                )


@dataclass
class Criteria:
    """Success criteria derived from the loss terms, overridden by the campaign's ``success``."""

    gap_key: str | None = None
    gap_window: tuple[float, float] | None = None
    fe_key: str | None = None
    fe_max: float | None = None
    tolerance_window: tuple[float, float] | None = None
    magmom_key: str | None = None
    magmom_tol: float | None = None
    magnetic_key: str | None = None
    magmom_min: float | None = None
    min_distance: float = 0.5
    max_elements: int | None = None
    angle_tol: float = 5.0

    @classmethod
    def from_campaign(cls, campaign: Campaign, terms: list[LossTerm]) -> Criteria:
        """Derive windows from the terms, then apply explicit overrides."""
        c = cls()
        for t in terms:
            imp = t.implies
            if "band_gap_window" in imp:
                c.gap_key, c.gap_window = imp["band_gap_key"], tuple(imp["band_gap_window"])
            if "formation_energy_key" in imp:
                c.fe_key = imp["formation_energy_key"]
                c.fe_max = imp.get("formation_energy_max", c.fe_max)
            if imp.get("tolerance"):
                c.tolerance_window = (0.8, 1.0)
            if "magmom_key" in imp:
                c.magmom_key, c.magmom_tol = imp["magmom_key"], imp["magmom_integer_tol"]
            if "magnetic_key" in imp:
                c.magnetic_key, c.magmom_min = imp["magnetic_key"], imp["magmom_min"]
        sc = campaign.success
        if sc.band_gap_window is not None:
            c.gap_window = tuple(sc.band_gap_window)
        if sc.formation_energy_max is not None:
            c.fe_max = sc.formation_energy_max
        if sc.tolerance_window is not None:
            c.tolerance_window = tuple(sc.tolerance_window)
        if sc.magmom_integer_tol is not None:
            c.magmom_tol = sc.magmom_integer_tol
        c.min_distance = sc.min_distance
        c.max_elements = sc.max_elements
        return c

    def property_flags(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Criteria that depend on predicted properties, as (B,) bool tensors."""
        flags: dict[str, torch.Tensor] = {}
        if self.gap_key and self.gap_window and self.gap_key in ctx.props:
            g = ctx.props[self.gap_key]
            flags["gap_window"] = (g >= self.gap_window[0]) & (g <= self.gap_window[1])
        if self.fe_key and self.fe_max is not None and self.fe_key in ctx.props:
            flags["formation_energy"] = ctx.props[self.fe_key] <= self.fe_max
        if self.tolerance_window and ctx.radii is not None:
            t = tolerance_factor_of(ctx)
            flags["tolerance"] = (t >= self.tolerance_window[0]) & (t <= self.tolerance_window[1])
        if self.magmom_key and self.magmom_tol is not None and self.magmom_key in ctx.props:
            m = ctx.props[self.magmom_key] / ctx.formula_units
            flags["magmom_integer"] = (m - torch.round(m)).abs() <= self.magmom_tol
        if self.magnetic_key and self.magmom_min is not None and self.magnetic_key in ctx.props:
            m = ctx.props[self.magnetic_key] / ctx.formula_units
            flags["magnetic"] = m >= self.magmom_min
        return flags

    def soft_success(self, ctx: LossContext) -> torch.Tensor:
        """(B,) bool: every property criterion holds on the soft state (mutation group A)."""
        flags = self.property_flags(ctx)
        out = torch.ones(ctx.batch.n_crystals, dtype=torch.bool, device=ctx.batch.device)
        for v in flags.values():
            out &= v
        return out if flags else torch.zeros_like(out)


@dataclass
class ProposalResult:
    """Everything the proposal stage produced."""

    records: list[dict[str, Any]]
    structures: list[Structure]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    #: batch index -> per-step (mean, min) total loss
    history: dict[int, list[tuple[float, float]]] = field(default_factory=dict)


def min_interatomic_distance(s: Structure) -> float:
    """Shortest interatomic distance (periodic images included), Å."""
    shortest_lattice = float(min(s.lattice.get_lll_reduced_lattice().abc))
    if len(s) < 2:
        return shortest_lattice
    d = s.distance_matrix
    np.fill_diagonal(d, np.inf)
    return float(min(d.min(), shortest_lattice))


class ProposalRun:
    """A prepared proposal stage: everything validated before any output is written."""

    def __init__(
        self,
        campaign: Campaign,
        n_candidates: int | None = None,
        steps: int | None = None,
        seed: int | None = None,
        predictors: dict[str, Predictor] | None = None,
        remote_templates: bool = True,
        lazy_templates: bool = False,
    ) -> None:
        """Validate and prepare everything before any output is written.

        ``predictors`` None builds the campaign's predictors ({} checks without any);
        ``remote_templates`` False skips Materials Project sources that are not cached yet;
        ``lazy_templates`` resolves a template's oxidation patterns only when a batch uses it
        (a workflow job runs a few batches of a campaign already validated at submit time).
        """
        self.campaign = campaign
        sch = campaign.schedule
        self.n = int(n_candidates or sch.n_candidates)
        self.steps = int(steps or sch.steps)
        self.seed = campaign.seed if seed is None else int(seed)
        self.device = resolve_device(campaign.device)
        self.table: OxidationTable = load_policy(
            campaign.policy
            if campaign.policy in ("ionic", "ionic+metallic")
            else campaign.resolve(campaign.policy)
        )
        self.terms = [
            build_term(loss.model_dump(exclude_none=True), i)
            for i, loss in enumerate(campaign.losses)
        ]
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise SpecError("losses: two terms share a name; give one a distinct 'name'")
        needed = {k.split(".", 1)[0] for t in self.terms for k in t.reads}
        check_term_properties(campaign, self.terms, predictors)
        if predictors is None:
            predictors = {
                n: build_predictor(campaign.predictors[n], device=self.device) for n in needed
            }
        self.predictors = predictors
        if predictors:
            check_term_properties(campaign, self.terms, predictors)
        excluded = exclusion_mask(campaign.exclude)
        supported = np.ones(N_ELEMENTS, dtype=bool)
        for p in predictors.values():
            if p.supported_z is not None:
                supported &= np.isin(np.arange(1, N_ELEMENTS + 1), sorted(p.supported_z))
        self.allowed = ~excluded & supported
        rng = np.random.default_rng(self.seed)
        #: provenance of remote template sources (Materials Project), by ``templates[i]``
        self.template_provenance: dict[str, Any] = {}
        self.templates = build_templates(campaign, rng, remote_templates, self.template_provenance)
        self.templates_left_out = self._drop_patternless_mp_templates()
        self.prepared = PreparedTemplates(
            self.templates, self.table, self.allowed, campaign.max_patterns, self.seed
        )
        if not lazy_templates:
            self.prepared.resolve_all()
        if any(t.term == "tolerance_factor" for t in self.terms):
            no_roles = [t.id for t in self.templates if t.roles is None]
            if no_roles:
                raise SpecError(
                    f"losses: tolerance_factor needs A/B/X site roles; template(s) {no_roles} "
                    "have none (use source: perovskite)"
                )
        self.criteria = Criteria.from_campaign(campaign, self.terms)
        self.settings = self._settings()

    def _drop_patternless_mp_templates(self) -> list[str]:
        """Leave out Materials Project templates with no charge-neutral pattern (logged).

        A one-site cell can only hold an element (pattern (0,)), which the ``ionic`` policy has
        no element for; a drawn template like that would fail its whole batch. A template the
        user named in a file still fails with an error naming it.
        """
        left_out = [
            t.id
            for t in self.templates
            if t.meta.get("kind") == "mp" and t.patterns is None
            and count_patterns([self.allowed] * t.n_sites, self.table) == 0
        ]  # fmt: skip
        if left_out and len(left_out) == len(self.templates):
            raise SpecError(
                f"templates: none of the {len(left_out)} Materials Project templates has a "
                f"charge-neutral oxidation pattern under policy {self.table.name!r}"
            )
        if left_out:
            gone = set(left_out)
            self.templates = [t for t in self.templates if t.id not in gone]
            log.warning(
                "left out %d Materials Project template(s) with no charge-neutral oxidation "
                "pattern under policy %r (e.g. one-site cells): %s",
                len(left_out),
                self.table.name,
                ", ".join(left_out[:10]) + (" …" if len(left_out) > 10 else ""),
            )
        return left_out

    def _settings(self) -> EngineSettings:
        sch = self.campaign.schedule
        steps = self.steps
        scale = steps / sch.steps
        sa = sch.annealing
        return EngineSettings(
            steps=steps,
            lr=sch.lr.model_dump(),
            temperature=(sch.temperature.start, sch.temperature.end),
            mutation_steps=[int(round(s * scale)) for s in sch.mutation.steps],
            top_fraction=sch.mutation.top_fraction,
            mutation_rate=sch.mutation.rate,
            mutation_noise=sch.mutation.noise,
            mutation_donors=sch.mutation.donors,
            sa_start_step=None if sa.start_step is None else int(round(sa.start_step * scale)),
            sa_t0=sa.t0,
            sa_tmin=sa.tmin,
            sa_trials=sa.trials,
            sa_coord_step=sa.coord_step,
            sa_length_step=sa.length_step,
            sa_angle_step=sa.angle_step,
            sa_keep=sa.keep,
            refresh_count=sch.graph_refresh.count,
        )

    @property
    def batches(self) -> list[list[int]]:
        """Template index per candidate, split into batches (round-robin over templates)."""
        assign = [i % max(len(self.prepared), 1) for i in range(self.n)]
        bs = self.campaign.schedule.batch_size
        return [assign[i : i + bs] for i in range(0, self.n, bs)]

    def make_state(self, assignment: list[int], gen: torch.Generator) -> CandidateState:
        """A fresh candidate state for one batch."""
        geo = self.campaign.geometry
        return CandidateState(
            self.prepared,
            assignment,
            angle_range=geo.angles.range,
            fix_angles=geo.angles.fixed,
            coord_mode=geo.coords.mode,
            epsilon=geo.coords.epsilon,
            default_length_range=geo.length_range,
            logit_floor=self.campaign.schedule.logit_floor,
            outer_softmax=self.campaign.schedule.outer_softmax,
            init_scale=self.campaign.schedule.temperature.start,
            generator=gen,
        ).to(self.device)

    def run(
        self,
        progress: Callable[[int], None] | None = None,
        batch_indices: list[int] | None = None,
    ) -> ProposalResult:
        """Optimise the batches (all, or ``batch_indices``) and export the candidates.

        Each batch is seeded from the campaign seed and its index alone, so running batches
        separately (one workflow job each) gives the same candidates as one whole run.
        """
        records: list[dict[str, Any]] = []
        structures: list[Structure] = []
        dropped: list[dict[str, Any]] = []
        stats: dict[str, int] = {}
        history: dict[int, list[tuple[float, float]]] = {}
        evaluator = Evaluator(self.predictors, self.terms, self.criteria.soft_success)
        all_batches = self.batches
        chosen = range(len(all_batches)) if batch_indices is None else batch_indices
        for bi in chosen:
            if not 0 <= bi < len(all_batches):
                raise SpecError(f"batch index {bi} is out of range (0..{len(all_batches) - 1})")
            assignment = all_batches[bi]
            batch_seed = self.seed * 1_000_003 + bi
            torch.manual_seed(batch_seed)
            random.seed(batch_seed)
            gen = torch.Generator().manual_seed(batch_seed)
            state = self.make_state(assignment, gen)
            opt = SmoacsOptimizer(state, evaluator, self.settings, gen, progress)
            opt.run()
            history[bi] = opt.history
            for k, v in vars(opt.stats).items():
                stats[k] = stats.get(k, 0) + int(v)
            recs, structs, drops = self.export(state, evaluator, bi)
            records += recs
            structures += structs
            dropped += drops
        return ProposalResult(records, structures, dropped, stats, history)

    # ----------------------------------------------------------------- export
    @torch.no_grad()
    def export(
        self, state: CandidateState, evaluator: Evaluator, batch_index: int
    ) -> tuple[list[dict], list[Structure], list[dict]]:
        """Discretise a batch, evaluate the discrete crystals and build their records.

        The discrete crystals are scored by each predictor's :meth:`Predictor.for_scoring`
        (e.g. an ALIGNN gap model's own gate, not an optimisation-only ``gate``).
        """
        scorers = {n: p.for_scoring() for n, p in evaluator.predictors.items()}
        if any(scorers[n] is not p for n, p in evaluator.predictors.items()):
            evaluator = Evaluator(scorers, evaluator.terms, evaluator.success_fn)
        disc = state.discrete()
        z = disc["atomic_numbers"]
        pidx = disc["pattern_index"]
        lattice, degenerate = state.lattice()
        frac = state.frac_coords().detach()
        b = state.n_crystals
        n_sites_total = z.shape[0]
        onehot = torch.nn.functional.one_hot(z - 1, N_ELEMENTS).to(frac.dtype)
        batch = SoftCrystalBatch(lattice.detach(), frac, onehot, state.crystal_index, state.n_sites)
        p_dp = onehot.unsqueeze(1).expand(-1, state.n_patterns_max, -1)
        w = torch.nn.functional.one_hot(pidx, state.n_patterns_max).to(frac.dtype)
        finite = torch.isfinite(lattice).flatten(1).all(1) & ~degenerate
        site_finite = torch.isfinite(frac).all(1)
        finite &= (
            torch.zeros(b, dtype=torch.long, device=frac.device).index_add(
                0, state.crystal_index, (~site_finite).long()
            )
            == 0
        )
        evaluator.refresh(batch)
        ctx = evaluator.context(state, batch, {"pattern_probs": p_dp, "pattern_weights": w})
        total, parts = evaluator.losses(ctx)
        prop_flags = self.criteria.property_flags(ctx)
        tol = tolerance_factor_of(ctx) if ctx.radii is not None else None
        # everything the per-candidate loop reads, brought to the host once (the same
        # values: on a GPU, reading them element by element waited for the device each time)
        host = _to_host(
            {
                "z": z,
                "pidx": pidx,
                "lattice": lattice,
                "frac": frac,
                "finite": finite,
                "total": total,
                "n_sites": state.n_sites,
                "tol": tol,
                "flags": prop_flags,
                "props": ctx.props,
                "parts": parts,
            }
        )
        z, pidx, lattice, frac, finite, total = (
            host[k] for k in ("z", "pidx", "lattice", "frac", "finite", "total")
        )
        n_sites, tol, prop_flags = host["n_sites"], host["tol"], host["flags"]
        props, parts = host["props"], host["parts"]

        records, structures, dropped = [], [], []
        starts = torch.cumsum(n_sites, 0) - n_sites
        camp = self.campaign
        eps = camp.geometry.coords.epsilon
        for i in range(b):
            cid = f"{camp.name}-b{batch_index:03d}-c{i:04d}"
            pt = self.prepared[state.assignment[i]]
            if not bool(finite[i]) or not bool(torch.isfinite(total[i])):
                dropped.append({"id": cid, "template_id": pt.template.id, "reason": "non-finite"})
                continue
            s0, ns = int(starts[i]), int(n_sites[i])
            zs = z[s0 : s0 + ns].tolist()
            fc = frac[s0 : s0 + ns].cpu().numpy()
            s = Structure(Lattice(lattice[i].cpu().numpy()), zs, fc % 1.0)
            pattern = list(pt.patterns[int(pidx[i])])
            flags: dict[str, bool | None] = dict.fromkeys(CRITERIA)
            for k, v in prop_flags.items():
                flags[k] = bool(v[i])
            flags["neutral"] = bool(is_charge_neutral(s.composition, self.table))
            dmin = min_interatomic_distance(s)
            flags["min_distance"] = dmin >= self.criteria.min_distance
            n_el = len(s.composition.elements)
            if self.criteria.max_elements is not None:
                flags["max_elements"] = n_el <= self.criteria.max_elements
            if camp.geometry.coords.mode == "bounded":
                tf = pt.template.structure.frac_coords
                diff = fc - tf
                diff -= np.round(diff)
                ok_coords = bool(np.abs(diff).max() <= eps + 1e-6)
                ang = np.array(s.lattice.angles)
                ok_angles = bool(
                    np.abs(ang - np.array(pt.template.structure.lattice.angles)).max()
                    <= self.criteria.angle_tol
                )
                flags["template_preserved"] = ok_coords and ok_angles
            evaluated = [v for v in flags.values() if v is not None]
            flags["all"] = bool(evaluated) and all(evaluated)
            predicted = {}
            for key, val in props.items():
                if val.shape[0] == b:
                    predicted[key] = float(val[i])
                elif val.shape[0] == n_sites_total:
                    predicted[key] = [float(x) for x in val[s0 : s0 + ns]]
            losses = {k: float(v[i]) for k, v in parts.items()}
            losses["total"] = float(total[i])
            comp = s.composition
            records.append(
                {
                    "id": cid,
                    "campaign": camp.name,
                    "batch": batch_index,
                    "seed": self.seed,
                    "template_id": pt.template.id,
                    "template_family": pt.template.meta.get("family"),
                    "formula_units": pt.template.formula_units,
                    "oxidation_pattern": pattern,
                    "formula": comp.formula,
                    "reduced_formula": comp.reduced_formula,
                    "elements": sorted(e.symbol for e in comp.elements),
                    "n_elements": n_el,
                    "n_sites": ns,
                    "structure": s.as_dict(),
                    "predicted": predicted,
                    "losses": losses,
                    "min_distance": dmin,
                    "tolerance_factor": None if tol is None else float(tol[i]),
                    "neutral": flags["neutral"],
                    "success": flags,
                }
            )
            structures.append(s)
        return records, structures, dropped


def _to_host(tree: Any) -> Any:
    """``tree`` (tensors in dicts) with every tensor on the CPU (the same tensors on a CPU)."""
    if isinstance(tree, dict):
        return {k: _to_host(v) for k, v in tree.items()}
    return tree.cpu() if isinstance(tree, torch.Tensor) else tree


def success_table(records: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(criterion, successes, evaluated) for every criterion evaluated at least once."""
    rows = []
    for k in (*CRITERIA, "all"):
        vals = [r["success"].get(k) for r in records if r["success"].get(k) is not None]
        if vals:
            rows.append((k, int(sum(vals)), len(vals)))
    return rows


def finite_or_none(x: float) -> float | None:
    """``x`` if finite else None (for JSON)."""
    return x if math.isfinite(x) else None
