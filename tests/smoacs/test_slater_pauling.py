"""The Slater–Pauling loss term: valence counts, the rule per family, and its gradient."""

from __future__ import annotations

import torch

from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.smoacs.elements import N_ELEMENTS, z_of
from smoacs_flows.smoacs.losses import LossContext, build_term
from smoacs_flows.smoacs.slater_pauling import valence_count, valence_electrons

# Literature values (Galanakis et al., PRB 66, 134428 / 174429 (2002); Galanakis &
# Mavropoulos, PRB 67, 104417 (2003)): Z_t and the Slater–Pauling moment per formula unit.
LITERATURE = {
    ("half_heusler", ("Ni", "Mn", "Sb")): (22, 4.0),
    ("full_heusler", ("Co", "Co", "Mn", "Si")): (29, 5.0),
    ("zincblende", ("Cr", "As")): (11, 3.0),
}


def _ctx(probs: torch.Tensor, n_sites: list[int], moments: torch.Tensor, families) -> LossContext:
    b = len(n_sites)
    idx = torch.repeat_interleave(torch.arange(b), torch.tensor(n_sites))
    batch = SoftCrystalBatch(
        torch.eye(3, dtype=probs.dtype).repeat(b, 1, 1) * 5.0,
        torch.zeros(probs.shape[0], 3, dtype=probs.dtype),
        probs,
        idx,
        torch.tensor(n_sites),
    )
    return LossContext(
        batch=batch,
        props={"chgnet.magmom_total": moments},
        pattern_probs=probs.unsqueeze(1),
        pattern_weights=torch.ones(b, 1, dtype=probs.dtype),
        roles=torch.full((probs.shape[0],), -1),
        radii=None,
        formula_units=torch.ones(b, dtype=probs.dtype),
        template_families=list(families),
    )


def _onehot(symbols: tuple[str, ...]) -> torch.Tensor:
    p = torch.zeros(len(symbols), N_ELEMENTS, dtype=torch.float64)
    for i, s in enumerate(symbols):
        p[i, z_of(s) - 1] = 1.0
    return p


def test_textbook_valence_counts() -> None:
    nval = valence_electrons()
    expected = {"Fe": 8, "Mn": 7, "Co": 9, "Cu": 11, "Al": 3, "Ge": 4, "Sb": 5, "Te": 6, "Mg": 2}
    assert {s: nval[z_of(s) - 1] for s in expected} == expected


def test_literature_valence_counts_and_moments() -> None:
    term = build_term({"term": "slater_pauling", "predictor": "chgnet"})
    for (family, symbols), (zt, moment) in LITERATURE.items():
        p = _onehot(symbols)
        m = torch.tensor([moment], dtype=torch.float64)
        ctx = _ctx(p, [len(symbols)], m, [family])
        assert float(valence_count(ctx)[0]) == zt
        assert float(term(ctx)[0]) == 0.0  # the literature moment satisfies the rule
        off = _ctx(p, [len(symbols)], m + 1.5, [family])
        assert abs(float(term(off)[0]) - 1.5) < 1e-12


def test_family_without_rule_has_no_loss_or_gradient() -> None:
    term = build_term({"term": "slater_pauling", "predictor": "chgnet"})
    p = _onehot(("Cr", "As")).requires_grad_(True)
    m = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    loss = term(_ctx(p, [2], m, ["rocksalt"]))
    assert float(loss.detach()[0]) == 0.0
    loss.sum().backward()
    assert torch.all(p.grad == 0) and float(m.grad[0]) == 0.0
    # an explicit rule for the family switches it on
    term8 = build_term({"term": "slater_pauling", "predictor": "chgnet", "n0": {"rocksalt": 8}})
    assert float(term8(_ctx(p.detach(), [2], m.detach(), ["rocksalt"]))[0]) == 3.0


def test_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(0)
    n_sites = [4, 3, 2]
    logits = torch.randn(sum(n_sites), N_ELEMENTS, generator=gen, dtype=torch.float64)
    moments = torch.tensor([3.3, 0.7, 2.2], dtype=torch.float64)
    fams = ["full_heusler", "half_heusler", "zincblende"]
    term = build_term({"term": "slater_pauling", "predictor": "chgnet"})

    def f(lg: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return term(_ctx(torch.softmax(lg / 0.5, -1), n_sites, m, fams)).sum()

    lg = logits.clone().requires_grad_(True)
    m = moments.clone().requires_grad_(True)
    f(lg, m).backward()
    eps = 1e-6
    for i, j in [(0, 25), (1, 26), (4, 13), (7, 32), (8, 23)]:
        d = torch.zeros_like(logits)
        d[i, j] = eps
        fd = (f(logits + d, moments) - f(logits - d, moments)) / (2 * eps)
        assert abs(float(fd) - float(lg.grad[i, j])) < 1e-6 * max(1.0, abs(float(fd)))
    for b in range(3):
        d = torch.zeros_like(moments)
        d[b] = eps
        fd = (f(logits, moments + d) - f(logits, moments - d)) / (2 * eps)
        assert abs(float(fd) - float(m.grad[b])) < 1e-6
