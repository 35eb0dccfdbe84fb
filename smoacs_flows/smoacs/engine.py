"""The SMOACS optimisation loop: gradient steps, mutation, simulated annealing, refreshes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch
from smoacs_flows.smoacs.lattice import arcsine_refresh_steps
from smoacs_flows.smoacs.losses import LossContext, LossTerm
from smoacs_flows.smoacs.state import CandidateState

log = logging.getLogger(__name__)


@dataclass
class EngineSettings:
    """Schedule settings of one optimisation run (mirrors the campaign's ``schedule``)."""

    steps: int = 200
    lr: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("lengths", "angles", "coords", "elements", "patterns"), 0.01
        )
    )
    temperature: tuple[float, float] = (0.01, 0.0001)
    mutation_steps: Sequence[int] = ()
    top_fraction: float = 0.2
    mutation_rate: float = 0.5
    mutation_noise: float = 0.02
    #: donor pool: "batch" (the seed: any group-A/B member with the same site count, whose
    #: template the copy adopts) or "template" (only members grown from the same template)
    mutation_donors: str = "batch"
    sa_start_step: int | None = None
    sa_t0: float = 0.1
    sa_tmin: float = 0.001
    sa_trials: int = 4
    sa_coord_step: float = 0.02
    sa_length_step: float = 0.02
    sa_angle_step: float = 2.0
    #: after each SA step keep the Metropolis "current" state (the seed's hybrid rule) or
    #: copy the "best" state seen back into the parameters
    sa_keep: str = "current"
    refresh_count: int = 8


@dataclass
class StepStats:
    """Counters reported after a run."""

    nan_resets: int = 0
    mutated: int = 0
    sa_accepted: int = 0
    sa_proposed: int = 0
    refreshes: int = 0


class Evaluator:
    """Runs the predictors and the loss terms on a soft batch."""

    def __init__(
        self,
        predictors: dict[str, Predictor],
        terms: list[LossTerm],
        success_fn: Callable[[LossContext], torch.Tensor] | None = None,
    ) -> None:
        self.predictors = predictors
        self.terms = terms
        self.success_fn = success_fn
        needed = {k.split(".", 1)[0] for t in terms for k in t.reads}
        self.active = {n: p for n, p in predictors.items() if n in needed}

    def refresh(self, batch: SoftCrystalBatch) -> bool:
        """Rebuild neighbour graphs of the predictors that need it; True if any did."""
        did = False
        det = batch.detach()
        for p in self.active.values():
            if p.needs_graph_refresh:
                p.refresh(det)
                did = True
        return did

    def context(
        self, state: CandidateState, batch: SoftCrystalBatch, aux: dict[str, torch.Tensor]
    ) -> LossContext:
        """Predict every needed property and build the loss context."""
        props: dict[str, torch.Tensor] = {}
        for name, pred in self.active.items():
            for prop, value in pred.predict(batch).items():
                props[f"{name}.{prop}"] = value
        return LossContext(
            batch=batch,
            props=props,
            pattern_probs=aux["pattern_probs"],
            pattern_weights=aux["pattern_weights"],
            roles=state.roles,
            radii=state.radii if state.has_roles else None,
            formula_units=state.formula_units,
            template_families=[
                state.prepared[i].template.meta.get("family") for i in state.assignment
            ],
        )

    def losses(self, ctx: LossContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total (B,) and each term's unweighted value (B,)."""
        parts = {t.name: t(ctx) for t in self.terms}
        total = sum(t.weight * parts[t.name] for t in self.terms)
        return total, parts


def _temperature(step: int, steps: int, start: float, end: float) -> float:
    return start + (end - start) * (step / max(steps - 1, 1))


def _sa_temperature(k: int, n: int, t0: float, tmin: float) -> float:
    return t0 * (tmin / t0) ** (k / max(n - 1, 1))


class SmoacsOptimizer:
    """Optimises one :class:`CandidateState` against an :class:`Evaluator`."""

    def __init__(
        self,
        state: CandidateState,
        evaluator: Evaluator,
        settings: EngineSettings,
        generator: torch.Generator,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.state = state
        self.evaluator = evaluator
        self.s = settings
        self.gen = generator
        self.progress = progress
        self._stats = StepStats()
        groups = state.parameter_groups()
        # CPU: the single-tensor Adam torch picks there anyway (named, so the choice is not
        # re-made every step); CUDA: one fused kernel per group instead of ~10 small ones
        cuda = state.coord_u.device.type == "cuda"
        self.opt = torch.optim.Adam(
            [
                {"params": [p], "lr": settings.lr[name], "name": name}
                for name, p in groups.items()
                if p.requires_grad
            ],
            foreach=False,
            fused=cuda or None,
        )
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=settings.steps)
        self.refresh_steps = set(arcsine_refresh_steps(settings.steps, settings.refresh_count))
        self.last_total: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None
        self._history: list[tuple[float, float]] = []
        #: per step: (totals, finite mask), turned into ``history`` when it is read, so that
        #: a step on a GPU does not wait for its loss to reach the host
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._sa_accepted: list[torch.Tensor] = []

    @property
    def history(self) -> list[tuple[float, float]]:
        """Per step: (mean, min) of the finite per-candidate totals."""
        for total, finite in self._pending:
            ok = total[finite]
            if ok.numel():
                self._history.append((float(ok.mean()), float(ok.min())))
        self._pending.clear()
        return self._history

    @property
    def stats(self) -> StepStats:
        """The run's counters (annealing acceptances counted on the device are read here)."""
        if self._sa_accepted:
            self._stats.sa_accepted += int(torch.stack(self._sa_accepted).sum())
            self._sa_accepted.clear()
        return self._stats

    # ----------------------------------------------------------------- helpers
    def temperature(self, step: int) -> float:
        """Softmax temperature at ``step`` (linear decay)."""
        return _temperature(step, self.s.steps, *self.s.temperature)

    def evaluate(self, temperature: float) -> tuple[torch.Tensor, dict, LossContext]:
        """Forward pass: total loss (B,), parts and the loss context."""
        batch, aux = self.state(temperature)
        ctx = self.evaluator.context(self.state, batch, aux)
        total, parts = self.evaluator.losses(ctx)
        return total, parts, ctx

    def refresh(self, temperature: float) -> None:
        """Rebuild predictor graphs from the current geometry."""
        with torch.no_grad():
            batch, _ = self.state(temperature)
        if self.evaluator.refresh(batch):
            self._stats.refreshes += 1

    def _reset_opt_rows(self, crystals: torch.Tensor) -> None:
        """Zero Adam moments of the selected crystals' parameter rows."""
        sites = self.state.site_mask(crystals)
        for group in self.opt.param_groups:
            p = group["params"][0]
            st = self.opt.state.get(p)
            if not st:
                continue
            rows = sites if p.shape[0] == sites.shape[0] else crystals
            for key in ("exp_avg", "exp_avg_sq"):
                st[key][rows] = 0.0

    # ----------------------------------------------------------------- gradient step
    def gradient_step(self, step: int) -> torch.Tensor:
        """One Adam step on the summed finite losses; returns the per-candidate total."""
        t = self.temperature(step)
        self.opt.zero_grad(set_to_none=True)
        total, _, ctx = self.evaluate(t)
        finite = torch.isfinite(total)
        total.masked_fill(~finite, 0.0).sum().backward()
        for p in self.state.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        self.opt.step()
        self.sched.step()
        self.state.project()
        self.last_total = total.detach()
        self._pending.append((self.last_total, finite))
        if self.evaluator.success_fn is not None:
            with torch.no_grad():
                self.last_success = self.evaluator.success_fn(ctx).detach()
        self._nan_guard(finite)
        return self.last_total

    @torch.no_grad()
    def _nan_guard(self, finite_loss: torch.Tensor) -> None:
        st = self.state
        # the lattice is finite whenever length_scale and angle_u are (lengths are clamped
        # into the template's range, angles into theirs, and the construction clamps its
        # square root), so checking those parameters covers it without rebuilding it
        rows = torch.cat([st.length_scale, st.angle_u, st.pattern_logits], 1)
        bad = ~finite_loss | ~torch.isfinite(rows).all(1)
        sites_bad = ~torch.isfinite(torch.cat([st.coord_u, st.elem_logits], 1)).all(1)
        # added unconditionally (zero rows change nothing): one host sync per step, not two
        n_bad = torch.zeros(bad.shape, dtype=torch.long, device=bad.device)
        bad |= n_bad.index_add(0, st.crystal_index, sites_bad.long()).bool()
        if bad.any():
            log.warning("resetting %d candidate(s) with a non-finite state", int(bad.sum()))
            self.state.reset_to_template(bad)
            self._reset_opt_rows(bad)
            self._stats.nan_resets += int(bad.sum())

    # ----------------------------------------------------------------- mutation
    @torch.no_grad()
    def mutate(self, total: torch.Tensor, success: torch.Tensor | None) -> torch.Tensor:
        """Refill group C from groups A (successful) and B (best ``top_fraction`` by loss).

        Each group-C member is replaced with probability ``mutation_rate`` by a noisy copy of a
        random A/B member of the whole batch (seed 000 B.3: "mutation operates within each
        batch") with the same number of sites; the copy adopts its donor's template, so it
        inherits the donor's oxidation patterns, masks and pattern weights ("the oxidation
        mask from the replacement candidate is reused"), and its element distribution is
        re-initialised uniformly. With ``mutation_donors="template"`` only members grown from
        the same template are donors. Returns the (B,) mask of replaced candidates.
        """
        b = total.shape[0]
        st = self.state
        loss = torch.where(torch.isfinite(total), total, torch.full_like(total, math.inf))
        # the bookkeeping stays on the CPU (the generator's device) whatever the state's device
        order = torch.argsort(loss).cpu()
        group_a = success.cpu().clone() if success is not None else torch.zeros(b, dtype=torch.bool)
        n_top = int(math.ceil(self.s.top_fraction * b))
        group_b = torch.zeros(b, dtype=torch.bool)
        group_b[order[:n_top]] = True
        group_b &= ~group_a
        donors = group_a | group_b
        replaced = torch.zeros(b, dtype=torch.bool)
        key = (
            torch.as_tensor(st.assignment)
            if self.s.mutation_donors == "template"
            else st.n_sites.cpu()
        )
        coin = torch.rand(b, generator=self.gen)
        for c in torch.nonzero(~donors).flatten().tolist():
            if coin[c] >= self.s.mutation_rate:
                continue
            same = torch.nonzero(donors & (key == key[c])).flatten()
            if same.numel() == 0:
                continue
            d = int(same[torch.randint(same.numel(), (1,), generator=self.gen)])
            if st.assignment[d] != st.assignment[c]:
                st.adopt_template(d, c)
            self._copy_geometry(d, c)
            replaced[c] = True
        replaced = replaced.to(total.device)
        if replaced.any():
            st.reinit_elements(replaced)
            self._reset_opt_rows(replaced)
            st.project()
        self._stats.mutated += int(replaced.sum())
        return replaced

    def _copy_geometry(self, donor: int, target: int) -> None:
        st, noise = self.state, self.s.mutation_noise
        dev = st.coord_u.device  # random draws on the generator's device (CPU), then moved
        st.length_scale[target] = st.length_scale[donor] * (
            1 + noise * torch.randn(3, generator=self.gen, dtype=st.length_scale.dtype).to(dev)
        )
        st.angle_u[target] = st.angle_u[donor]
        st.pattern_logits[target] = st.pattern_logits[donor]
        src = torch.nonzero(st.crystal_index == donor).flatten()
        dst = torch.nonzero(st.crystal_index == target).flatten()
        jitter = noise * torch.randn(len(dst), 3, generator=self.gen, dtype=st.coord_u.dtype)
        jitter = jitter.to(dev)
        st.coord_u[dst] = st.coord_u[src] + jitter

    # ----------------------------------------------------------------- annealing
    @torch.no_grad()
    def anneal(self, step: int) -> None:
        """One simulated-annealing step: ``sa_trials`` Metropolis proposals.

        Each proposal perturbs, per candidate, either its coordinates, its lengths or its
        angles (equal probability; coordinates or lengths when angles are fixed) and is
        accepted when it lowers the loss, else with probability exp(−Δ/T). With
        ``sa_keep="current"`` (the seed's gradient + SA hybrid) the chain's current state stays
        in the parameters, accepted uphill moves included; with ``"best"`` the best state seen
        in this step (the starting one included) is copied back.
        """
        st, s = self.state, self.s
        n_sa = s.steps - s.sa_start_step
        k = step - s.sa_start_step
        temp = _sa_temperature(k, n_sa, s.sa_t0, s.sa_tmin)
        t_soft = self.temperature(step)
        current, _, _ = self.evaluate(t_soft)
        current = torch.where(torch.isfinite(current), current, torch.full_like(current, math.inf))
        keep_best = s.sa_keep == "best"
        best_loss = current.clone()
        best = st.geometry_snapshot() if keep_best else None
        b = current.shape[0]
        n_kinds = 2 if st.fix_angles else 3
        for _ in range(s.sa_trials):
            saved = st.geometry_snapshot()
            kind = torch.randint(n_kinds, (b,), generator=self.gen).to(current.device)
            self._perturb(kind)
            st.project()
            new, _, _ = self.evaluate(t_soft)
            new = torch.where(torch.isfinite(new), new, torch.full_like(new, math.inf))
            delta = new - current
            u = torch.rand(b, generator=self.gen, dtype=new.dtype).to(new.device)
            accept = (delta <= 0) | (u < torch.exp(-delta.clamp_min(0) / temp))
            accept &= torch.isfinite(new)
            st.load_geometry(saved, ~accept)
            current = torch.where(accept, new, current)
            if best is not None:
                improved = current < best_loss
                if improved.any():
                    now = st.geometry_snapshot()
                    for key in best:
                        rows = improved if best[key].shape[0] == b else improved[st.crystal_index]
                        best[key][rows] = now[key][rows]
                    best_loss = torch.where(improved, current, best_loss)
            self._stats.sa_proposed += b
            self._sa_accepted.append(accept.sum())  # counted on the device, read at the end
        if best is not None:
            st.load_geometry(best, torch.ones(b, dtype=torch.bool, device=current.device))

    def _perturb(self, kind: torch.Tensor) -> None:
        st, s = self.state, self.s
        dt, dev = st.coord_u.dtype, st.coord_u.device
        coords = kind == 0
        lengths = kind == 1
        angles = kind == 2
        sites = st.site_mask(coords)
        step = s.sa_coord_step
        if st.coord_mode == "bounded":
            step = s.sa_coord_step / st.epsilon  # offsets live in tanh space
        noise = step * torch.randn(st.coord_u.shape, generator=self.gen, dtype=dt).to(dev)
        st.coord_u.add_(noise * sites[:, None])
        ln = s.sa_length_step * torch.randn(st.length_scale.shape, generator=self.gen, dtype=dt)
        ln = ln.to(dev)
        st.length_scale.mul_(1 + ln * lengths[:, None])
        if not st.fix_angles:
            lo, hi = st.angle_range
            an = (s.sa_angle_step / (hi - lo)) * torch.randn(
                st.angle_u.shape, generator=self.gen, dtype=dt
            ).to(dev)
            st.angle_u.add_(an * angles[:, None])

    # ----------------------------------------------------------------- run
    def run(self) -> torch.Tensor:
        """Run the whole schedule; returns the last per-candidate total loss."""
        s = self.s
        mutation_steps = set(s.mutation_steps)
        self.refresh(self.temperature(0))
        total = None
        for step in range(s.steps):
            if step in self.refresh_steps:
                self.refresh(self.temperature(step))
            if step in mutation_steps and self.last_total is not None:
                self.mutate(self.last_total, self.last_success)
                self.refresh(self.temperature(step))
            total = self.gradient_step(step)
            if s.sa_start_step is not None and step >= s.sa_start_step:
                self.anneal(step)
            if self.progress is not None:
                self.progress(1)
        self.refresh(self.temperature(s.steps - 1))
        return total if total is not None else torch.zeros(0)


def summarise_flags(flags: list[dict[str, bool | None]]) -> dict[str, tuple[int, int]]:
    """Per criterion: (successes, evaluated) over candidates; None counts as not evaluated."""
    out: dict[str, tuple[int, int]] = {}
    keys: list[str] = []
    for f in flags:
        for k in f:
            if k not in keys:
                keys.append(k)
    for k in keys:
        vals = [f.get(k) for f in flags if f.get(k) is not None]
        out[k] = (int(np.sum(vals)), len(vals))
    return out
