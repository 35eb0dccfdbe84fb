"""The loss term ``gapped``: softplus(−l) of a hurdle gap model's classifier logit.

Where the shipped gate sigmoid(8 (l − 2)) is shut, the gated gap and its hinge have no
gradient; −log P(gapped) still has one. References: the model's own raw output (l, g) and
−log σ(l) in float64 numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smoacs_flows.predictors.alignn import GAPPED_LOGIT, build
from smoacs_flows.predictors.alignn_training import load_dataset
from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.smoacs.losses import LossContext, build_term

#: the val.csv-only model, so test.csv rows are held out (the current one trains on them)
MODEL = "perov5-band-gap-val"


@pytest.fixture(scope="module")
def metals(shared_data):
    """Six held-out metals (dir_gap = 0) of perov_5 test.csv: where the gate is shut."""
    data = load_dataset(shared_data / "perov_5" / "test.csv", "dir_gap", limit=40)
    idx = np.flatnonzero(np.asarray(data.targets) == 0)[:6]
    return [data.structures[i] for i in idx]


def _ctx(pred, structures) -> tuple[LossContext, torch.Tensor]:
    batch = SoftCrystalBatch.from_structures(structures)
    probs = batch.element_probs.clone().requires_grad_(True)
    soft = SoftCrystalBatch(
        batch.lattice, batch.frac_coords, probs, batch.crystal_index, batch.n_sites
    )
    props = {f"gap.{k}": v for k, v in pred.predict(soft).items()}
    ctx = LossContext(
        batch=soft,
        props=props,
        pattern_probs=None,
        pattern_weights=None,
        roles=None,
        radii=None,
        formula_units=None,
        template_families=[],
    )
    return ctx, probs


def test_the_logit_is_the_models_own(metals) -> None:
    pred = build(model=MODEL)
    assert GAPPED_LOGIT in pred.properties
    ctx, _ = _ctx(pred, metals)
    raw = pred.model.raw(ctx.batch, pred._graph).detach().numpy()
    np.testing.assert_allclose(ctx.props[f"gap.{GAPPED_LOGIT}"].detach().numpy(), raw[:, 0])


def test_gapped_has_a_gradient_where_the_hinge_has_none(metals) -> None:
    pred = build(model=MODEL)
    hinge = build_term({"term": "band_gap_hinge", "predictor": "gap", "target": 1.5})
    gapped = build_term({"term": "gapped", "predictor": "gap"})
    ctx, probs = _ctx(pred, metals)
    (g_hinge,) = torch.autograd.grad(hinge(ctx).sum(), probs, retain_graph=True)
    value = gapped(ctx)
    (g_gap,) = torch.autograd.grad(value.sum(), probs)
    crystal = ctx.batch.crystal_index
    per = lambda g: np.array(  # noqa: E731
        [float(g[crystal == i].abs().max()) for i in range(len(metals))]
    )
    shut = per(g_hinge) < 1e-6
    assert shut.sum() >= 4  # the finding: the gate leaves no gradient on most metals
    assert (per(g_gap)[shut] > 1e-3).all()
    logit = ctx.props[f"gap.{GAPPED_LOGIT}"].detach().double().numpy()
    expect = -np.log(1.0 / (1.0 + np.exp(-logit)))  # −log σ(l)
    np.testing.assert_allclose(value.detach().double().numpy(), expect, rtol=1e-5)
