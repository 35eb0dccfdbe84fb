"""The Slater–Pauling term: a differentiable valence-electron count against the moment.

Half-metals of a given structure family follow a Slater–Pauling rule between the total
number of valence electrons per formula unit Z_t and the total spin moment M (μB/f.u.):
M = Z_t − N₀ with N₀ = 24 for full (L2₁), inverse (XA) and quaternary Heuslers, 18 for half
Heuslers (C1b) and 8 for zinc-blende / wurtzite binaries (Galanakis, Dederichs & Papanikolaou,
PRB 66, 134428 and 174429 (2002); Galanakis & Mavropoulos, PRB 67, 104417 (2003)).

On the soft state the count is an expectation over the site distributions,
``Z_t = Σ_sites Σ_Z p_site(Z)·N_val(Z) / formula_units``, so the term
``|M − (Z_t − N₀)|`` is differentiable in both the element distributions and (through the
predictor) in the geometry.

Valence convention (the one Slater–Pauling counting uses): every electron outside the
noble-gas core except filled d shells of p-block elements, i.e. the periodic-table group number
for groups 1–12 (s + d: Mn 7, Co 9, Ni 10, Cu 11) and group − 10 for groups 13–18 (s + p:
Al 3, Si 4, Sb 5); lanthanides and actinides count 3. Groups come from pymatgen's ``Element``.

The rule is attached to the template *family* (``templates[].family`` in the campaign);
crystals grown from a template whose family has no rule get no Slater–Pauling loss.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from smoacs_flows.smoacs.elements import N_ELEMENTS
from smoacs_flows.smoacs.losses import LossContext, LossTerm, _crystal_values, _key, register_term

#: N₀ of the Slater–Pauling rule M = Z_t − N₀, per template family
DEFAULT_N0: dict[str, float] = {
    "full_heusler": 24.0,
    "inverse_heusler": 24.0,
    "quaternary_heusler": 24.0,
    "half_heusler": 18.0,
    "zincblende": 8.0,
    "wurtzite": 8.0,
}


@lru_cache(maxsize=1)
def valence_electrons() -> np.ndarray:
    """(98,) valence-electron count N_val(Z) in the Slater–Pauling convention (index Z − 1)."""
    from pymatgen.core import Element

    out = np.zeros(N_ELEMENTS)
    for z in range(1, N_ELEMENTS + 1):
        el = Element.from_Z(z)
        if el.is_lanthanoid or el.is_actinoid:
            out[z - 1] = 3.0
            continue
        g = int(el.group)
        out[z - 1] = g if g <= 12 else g - 10
    out[1] = 2.0  # He: 1s² (group 18 would give 8)
    return out


def valence_count(ctx: LossContext) -> torch.Tensor:
    """Soft Z_t per formula unit (B,): Σ_sites Σ_Z p(Z)·N_val(Z) / formula_units."""
    probs = ctx.batch.element_probs
    nval = torch.as_tensor(valence_electrons(), dtype=probs.dtype, device=probs.device)
    per_site = probs @ nval  # (N,)
    out = torch.zeros(ctx.batch.n_crystals, dtype=probs.dtype, device=probs.device)
    out = out.index_add(0, ctx.batch.crystal_index, per_site)
    return out / ctx.formula_units.to(probs.dtype)


def n0_per_crystal(ctx: LossContext, n0: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """N₀ of each crystal's template family (B,) and whether the family has a rule (B,)."""
    fams = ctx.template_families or [None] * ctx.batch.n_crystals
    dev, dt = ctx.batch.device, ctx.batch.element_probs.dtype
    vals = torch.tensor([float(n0.get(f, 0.0)) for f in fams], dtype=dt, device=dev)
    has = torch.tensor([f in n0 for f in fams], dtype=torch.bool, device=dev)
    return vals, has


@register_term("slater_pauling")
def slater_pauling(
    predictor: str,
    property: str = "magmom_total",
    n0: dict[str, float] | None = None,
) -> LossTerm:
    """|M − (Z_t − N₀)| per formula unit; N₀ from the template family (``n0`` overrides)."""
    table = dict(DEFAULT_N0)
    for fam, v in (n0 or {}).items():
        table[str(fam)] = float(v)
    k = _key(predictor, property)

    def fn(ctx: LossContext) -> torch.Tensor:
        m = _crystal_values(ctx, k) / ctx.formula_units
        n0_b, has_rule = n0_per_crystal(ctx, table)
        loss = (m - (valence_count(ctx) - n0_b)).abs()
        # no rule for this family: no loss and no gradient
        return loss * has_rule.to(loss.dtype)

    return LossTerm("slater_pauling", "slater_pauling", 1.0, fn, [k])
