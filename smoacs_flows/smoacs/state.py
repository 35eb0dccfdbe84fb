"""Learnable candidate state: one batch of crystals as tensors, and its soft forward pass."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from smoacs_flows.errors import SpecError
from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.smoacs.elements import N_ELEMENTS, ionic_radius, symbols
from smoacs_flows.smoacs.lattice import angles_from_unit, lattice_from_parameters, unit_from_angles
from smoacs_flows.smoacs.losses import ROLE_IDS
from smoacs_flows.smoacs.oxidation import OxidationTable, sample_patterns
from smoacs_flows.smoacs.templates import Template


@dataclass
class PreparedTemplate:
    """A template with its neutral patterns and per-pattern element masks resolved."""

    template: Template
    patterns: list[tuple[int, ...]]
    #: (P, n_sites, 98) bool
    masks: np.ndarray
    #: (P, n_sites, 98) Shannon radii (only when the template has roles)
    radii: np.ndarray | None


def prepare_template(
    template: Template,
    table: OxidationTable,
    allowed: np.ndarray,
    max_patterns: int,
    seed: int = 0,
) -> PreparedTemplate:
    """Resolve a template's neutral oxidation patterns and masks; errors name template/site.

    ``allowed`` is the (98,) mask of elements left after exclusions and predictor support.
    Enumerated patterns are a uniform sample (:func:`sample_patterns`) seeded by ``seed`` and
    the template id, so they do not depend on the order templates are prepared in.
    """
    n = template.n_sites
    if template.patterns is not None:
        patterns = [tuple(int(o) for o in p) for p in template.patterns]
        for pi, p in enumerate(patterns):
            if len(p) != n:
                raise SpecError(
                    f"template {template.id}: pattern {list(p)} has {len(p)} numbers for {n} sites"
                )
            if sum(p) != 0:
                raise SpecError(
                    f"template {template.id}: pattern {pi} {list(p)} is not charge neutral "
                    f"(sum {sum(p):+d})"
                )
            for si, ox in enumerate(p):
                if not (table.mask(ox) & allowed).any():
                    role = f" ({template.roles[si]})" if template.roles else ""
                    raise SpecError(
                        f"template {template.id}: site {si}{role} has no allowed element for "
                        f"oxidation number {ox:+d} in pattern {pi} {list(p)} under policy "
                        f"{table.name!r} after exclusions"
                    )
    else:
        digest = hashlib.sha256(f"{seed}:{template.id}".encode()).digest()
        patterns = sample_patterns(
            [allowed] * n, table, max_patterns, int.from_bytes(digest[:8], "little")
        )
        if not patterns:
            raise SpecError(
                f"template {template.id}: no charge-neutral oxidation pattern for its {n} sites "
                f"under policy {table.name!r} with the excluded elements"
            )
    masks = np.stack(
        [np.stack([table.mask(ox) & allowed for ox in p]) for p in patterns]
    )  # (P, n, 98)
    radii = None
    if template.roles is not None:
        radii = np.zeros(masks.shape, dtype=float)
        for pi, p in enumerate(patterns):
            for si, ox in enumerate(p):
                cn = "XII" if template.roles[si] == "A" else "VI"
                for z in np.flatnonzero(masks[pi, si]) + 1:
                    radii[pi, si, z - 1] = ionic_radius(int(z), ox, cn)
    return PreparedTemplate(template, patterns, masks, radii)


class CandidateState(torch.nn.Module):
    """Parameters and buffers of a batch of candidates grown from prepared templates.

    Parameter groups: ``length_scale`` (B, 3) multipliers of the template's largest length,
    ``angle_u`` (B, 3) angles normalised to [0, 1] over the angle range, ``coord_u`` (N, 3)
    fractional coordinates (wrapped) or bounded offsets, ``elem_logits`` (N, 98) and
    ``pattern_logits`` (B, P).
    """

    def __init__(
        self,
        prepared: list[PreparedTemplate],
        assignment: list[int],
        *,
        angle_range: tuple[float, float],
        fix_angles: bool,
        coord_mode: str,
        epsilon: float,
        default_length_range: tuple[float, float],
        logit_floor: float,
        init_scale: float,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        outer_softmax: bool = False,
    ) -> None:
        super().__init__()
        #: seed 001 eq. 9: a second σ_T over the pattern mixture (within the allowed elements)
        self.outer_softmax = outer_softmax
        self.prepared = prepared
        self.assignment = list(assignment)
        self.angle_range = angle_range
        self.fix_angles = fix_angles
        self.coord_mode = coord_mode
        self.epsilon = epsilon
        self.logit_floor = logit_floor
        self.init_scale = init_scale
        self.generator = generator
        temps = [prepared[i] for i in assignment]
        b = len(temps)
        n_sites = [pt.template.n_sites for pt in temps]
        p_max = max(len(pt.patterns) for pt in temps)
        n = sum(n_sites)
        self.n_patterns_max = p_max

        lengths = np.array([pt.template.structure.lattice.abc for pt in temps], dtype=float)
        angles = np.array([pt.template.structure.lattice.angles for pt in temps], dtype=float)
        lmax = lengths.max(1)
        ranges = np.array(
            [pt.template.length_range or default_length_range for pt in temps], dtype=float
        )
        frac = np.concatenate([pt.template.structure.frac_coords % 1.0 for pt in temps])
        masks = np.zeros((n, p_max, N_ELEMENTS), dtype=bool)
        radii = np.zeros((n, p_max, N_ELEMENTS), dtype=float)
        pattern_valid = np.zeros((b, p_max), dtype=bool)
        patterns = np.zeros((b, p_max, max(n_sites)), dtype=np.int64)
        roles = np.full(n, -1, dtype=np.int64)
        has_roles = all(pt.template.roles is not None for pt in temps)
        start = 0
        for bi, pt in enumerate(temps):
            k, ns = len(pt.patterns), pt.template.n_sites
            sl = slice(start, start + ns)
            masks[sl, :k] = pt.masks.transpose(1, 0, 2)
            # padded patterns: any element, weight 0 (keeps softmax finite)
            masks[sl, k:] = True
            if pt.radii is not None:
                radii[sl, :k] = pt.radii.transpose(1, 0, 2)
            pattern_valid[bi, :k] = True
            patterns[bi, :k, :ns] = np.array(pt.patterns)
            if pt.template.roles is not None:
                roles[sl] = [ROLE_IDS.get(r, -1) for r in pt.template.roles]
            start += ns

        def buf(name: str, value: np.ndarray, dt: torch.dtype | None = None) -> None:
            self.register_buffer(name, torch.as_tensor(value, dtype=dt or dtype))

        buf("length_max", lmax)
        buf("length_lo", ranges[:, 0])
        buf("length_hi", ranges[:, 1])
        buf("template_angles", angles)
        buf("template_frac", frac)
        buf("masks", masks, torch.bool)
        buf("radii", radii)
        buf("pattern_valid", pattern_valid, torch.bool)
        buf("patterns", patterns, torch.long)
        buf("roles", roles, torch.long)
        buf("n_sites", np.array(n_sites), torch.long)
        buf(
            "crystal_index",
            np.repeat(np.arange(b), n_sites),
            torch.long,
        )
        buf("formula_units", np.array([pt.template.formula_units for pt in temps]))
        self.has_roles = has_roles

        lo, hi = angle_range
        self.length_scale = torch.nn.Parameter(
            torch.as_tensor(lengths / lmax[:, None], dtype=dtype)
        )
        self.angle_u = torch.nn.Parameter(
            unit_from_angles(torch.as_tensor(angles, dtype=dtype), lo, hi).clamp(0, 1),
            requires_grad=not fix_angles,
        )
        init_coords = frac if coord_mode == "free" else np.zeros_like(frac)
        self.coord_u = torch.nn.Parameter(torch.as_tensor(init_coords, dtype=dtype))
        self.elem_logits = torch.nn.Parameter(torch.zeros(n, N_ELEMENTS, dtype=dtype))
        self.pattern_logits = torch.nn.Parameter(torch.zeros(b, p_max, dtype=dtype))
        self.reinit_elements(torch.ones(b, dtype=torch.bool))
        with torch.no_grad():
            # same uniform start as the element logits: a soft mixture at the first temperature
            self.pattern_logits.uniform_(0.0, init_scale, generator=generator)

    # ----------------------------------------------------------------- parametrisation
    @property
    def n_crystals(self) -> int:
        """Number of candidates."""
        return int(self.n_sites.shape[0])

    def site_mask(self, crystals: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the sites of the crystals selected by the (B,) bool mask."""
        return crystals[self.crystal_index]

    def lengths(self) -> torch.Tensor:
        """Lattice lengths (B, 3), Å, kept inside each template's length range."""
        raw = self.length_scale * self.length_max[:, None]
        return torch.maximum(torch.minimum(raw, self.length_hi[:, None]), self.length_lo[:, None])

    def angles(self) -> torch.Tensor:
        """Lattice angles (B, 3), degrees (the template's when fixed)."""
        if self.fix_angles:
            return self.template_angles
        return angles_from_unit(self.angle_u, *self.angle_range)

    def frac_coords(self) -> torch.Tensor:
        """Fractional coordinates (N, 3): wrapped into [0, 1), or template ± epsilon."""
        if self.coord_mode == "free":
            return torch.remainder(self.coord_u, 1.0)
        return self.template_frac + self.epsilon * torch.tanh(self.coord_u)

    def lattice(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lattice matrices (B, 3, 3) and the degenerate-cell flags (B,)."""
        return lattice_from_parameters(self.lengths(), self.angles())

    def pattern_weights(self, temperature: float) -> torch.Tensor:
        """Oxidation-pattern weights (B, P): softmax_T over each candidate's valid patterns.

        The same temperature as the element distributions (seed papers: õ = σ_T(o)), so the
        mixture anneals toward a single pattern as T falls.
        """
        logits = self.pattern_logits / temperature
        return torch.softmax(logits.masked_fill(~self.pattern_valid, float("-inf")), dim=-1)

    def pattern_probs(self, temperature: float) -> torch.Tensor:
        """p(element | pattern) per site (N, P, 98): softmax_T of the masked, clipped logits.

        Logits are clipped from below *before* masking, and masked entries are -inf, so an
        element outside the mask has probability exactly zero.
        """
        logits = self.elem_logits.clamp_min(self.logit_floor) / temperature
        logits = logits.unsqueeze(1).expand(-1, self.n_patterns_max, -1)
        return torch.softmax(logits.masked_fill(~self.masks, float("-inf")), dim=-1)

    def forward(self, temperature: float) -> tuple[SoftCrystalBatch, dict[str, torch.Tensor]]:
        """The soft batch at ``temperature`` and auxiliary tensors for the loss terms."""
        lattice, degenerate = self.lattice()
        p_dp = self.pattern_probs(temperature)
        w = self.pattern_weights(temperature)
        probs = (p_dp * w[self.crystal_index].unsqueeze(-1)).sum(1)
        if self.outer_softmax:
            probs = self.sharpen(probs, temperature)
        batch = SoftCrystalBatch(
            lattice, self.frac_coords(), probs, self.crystal_index, self.n_sites
        )
        return batch, {"pattern_probs": p_dp, "pattern_weights": w, "degenerate": degenerate}

    def sharpen(self, probs: torch.Tensor, temperature: float) -> torch.Tensor:
        """Seed 001 eq. 9's outer σ_T,atom over the mixture, restricted to the elements some
        valid pattern allows at the site (so an element outside every mask stays at 0)."""
        valid = self.pattern_valid[self.crystal_index].unsqueeze(-1)  # (N, P, 1)
        union = (self.masks & valid).any(1)  # (N, 98)
        return torch.softmax((probs / temperature).masked_fill(~union, float("-inf")), dim=-1)

    # ----------------------------------------------------------------- maintenance
    @torch.no_grad()
    def project(self) -> None:
        """Keep parameters in their domains after an optimiser step."""
        self.angle_u.clamp_(0.0, 1.0)
        lo = self.length_lo[:, None] / self.length_max[:, None]
        hi = self.length_hi[:, None] / self.length_max[:, None]
        self.length_scale.copy_(torch.maximum(torch.minimum(self.length_scale, hi), lo))
        if self.coord_mode == "free":
            self.coord_u.remainder_(1.0)

    @torch.no_grad()
    def reinit_elements(self, crystals: torch.Tensor) -> None:
        """Re-initialise the element logits of the selected crystals (uniform start + jitter)."""
        sites = self.site_mask(crystals)
        # drawn on the generator's device (CPU), then moved: the same draws on every device
        fresh = torch.empty(self.elem_logits.shape, dtype=self.elem_logits.dtype).uniform_(
            self.logit_floor, self.logit_floor + self.init_scale, generator=self.generator
        )
        self.elem_logits[sites] = fresh.to(self.elem_logits.device)[sites]

    @torch.no_grad()
    def reset_to_template(self, crystals: torch.Tensor) -> None:
        """Reset geometry and element logits of the selected crystals to a fresh start."""
        if not crystals.any():
            return
        self.length_scale[crystals] = (
            torch.as_tensor(
                np.array(
                    [
                        self.prepared[self.assignment[i]].template.structure.lattice.abc
                        for i in range(self.n_crystals)
                    ]
                ),
                dtype=self.length_scale.dtype,
                device=self.length_scale.device,
            )[crystals]
            / self.length_max[crystals, None]
        )
        self.angle_u[crystals] = unit_from_angles(
            self.template_angles[crystals], *self.angle_range
        ).clamp(0, 1)
        sites = self.site_mask(crystals)
        if self.coord_mode == "free":
            self.coord_u[sites] = self.template_frac[sites]
        else:
            self.coord_u[sites] = 0.0
        self.reinit_elements(crystals)

    #: per-crystal and per-site buffers that describe a candidate's template
    _CRYSTAL_BUFFERS = (
        "length_max", "length_lo", "length_hi", "template_angles", "pattern_valid", "patterns",
        "formula_units",
    )  # fmt: skip
    _SITE_BUFFERS = ("template_frac", "masks", "radii", "roles")

    @torch.no_grad()
    def adopt_template(self, donor: int, target: int) -> None:
        """Make ``target`` grow from ``donor``'s template (same site count; mutation).

        Copies the template's lattice bounds, angles, canonical coordinates, oxidation patterns,
        masks, radii and roles, so the copy keeps its donor's constraints (the seed: "the
        oxidation mask from the replacement candidate is reused").
        """
        if int(self.n_sites[donor]) != int(self.n_sites[target]):
            raise ValueError(
                f"candidate {target} ({int(self.n_sites[target])} sites) cannot adopt the "
                f"template of candidate {donor} ({int(self.n_sites[donor])} sites)"
            )
        for name in self._CRYSTAL_BUFFERS:
            buf = getattr(self, name)
            buf[target] = buf[donor]
        src = torch.nonzero(self.crystal_index == donor).flatten()
        dst = torch.nonzero(self.crystal_index == target).flatten()
        for name in self._SITE_BUFFERS:
            buf = getattr(self, name)
            buf[dst] = buf[src]
        self.assignment[target] = self.assignment[donor]

    def parameter_groups(self) -> dict[str, torch.nn.Parameter]:
        """The named parameter groups (for per-group learning rates)."""
        return {
            "lengths": self.length_scale,
            "angles": self.angle_u,
            "coords": self.coord_u,
            "elements": self.elem_logits,
            "patterns": self.pattern_logits,
        }

    def geometry_snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of the geometry parameters (for annealing)."""
        return {
            "length_scale": self.length_scale.detach().clone(),
            "angle_u": self.angle_u.detach().clone(),
            "coord_u": self.coord_u.detach().clone(),
        }

    @torch.no_grad()
    def load_geometry(self, snap: dict[str, torch.Tensor], crystals: torch.Tensor) -> None:
        """Copy geometry from ``snap`` into the selected crystals."""
        # selections by torch.where, not boolean indexing: same values, no host sync on a GPU
        rows = crystals[:, None]
        self.length_scale.copy_(torch.where(rows, snap["length_scale"], self.length_scale))
        self.angle_u.copy_(torch.where(rows, snap["angle_u"], self.angle_u))
        sites = self.site_mask(crystals)[:, None]
        self.coord_u.copy_(torch.where(sites, snap["coord_u"], self.coord_u))

    # ----------------------------------------------------------------- discretisation
    @torch.no_grad()
    def discrete(self) -> dict[str, object]:
        """Argmax export: the winning pattern per crystal, then the argmax allowed element."""
        w = self.pattern_logits.masked_fill(~self.pattern_valid, float("-inf"))
        best = w.argmax(-1)  # (B,)
        site_best = best[self.crystal_index]
        rows = torch.arange(self.masks.shape[0], device=self.masks.device)
        mask = self.masks[rows, site_best]  # (N, 98)
        logits = self.elem_logits.clamp_min(self.logit_floor).masked_fill(~mask, float("-inf"))
        z = logits.argmax(-1) + 1
        return {"pattern_index": best, "atomic_numbers": z}


def symbol_list(zs: torch.Tensor) -> list[str]:
    """Element symbols for a tensor of atomic numbers."""
    sym = symbols()
    return [sym[int(z) - 1] for z in zs]
