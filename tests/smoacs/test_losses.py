"""Loss-term values against hand-computed references, and which moment a term reads."""

from __future__ import annotations

import pytest
import torch

from smoacs_flows.errors import SpecError
from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch
from smoacs_flows.smoacs.losses import LossContext, build_term
from smoacs_flows.smoacs.propose import ProposalRun

from .helpers import perovskite_campaign


def _ctx(props: dict[str, list[float]], formula_units: list[float]) -> LossContext:
    b = len(formula_units)
    batch = SoftCrystalBatch(
        torch.eye(3).repeat(b, 1, 1),
        torch.zeros(b, 3),
        torch.full((b, 98), 1 / 98),
        torch.arange(b),
        torch.ones(b, dtype=torch.long),
    )
    return LossContext(
        batch=batch,
        props={k: torch.tensor(v) for k, v in props.items()},
        pattern_probs=torch.zeros(b, 1, 98),
        pattern_weights=torch.ones(b, 1),
        roles=torch.full((b,), -1),
        radii=None,
        formula_units=torch.tensor(formula_units),
    )


def test_metallicity_default_margin_is_the_seeds_0_01_ev() -> None:
    term = build_term({"term": "metallicity", "predictor": "g"})
    ctx = _ctx({"g.band_gap": [0.0, 0.005, 0.01, 0.5, 2.0]}, [1] * 5)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.49, 1.99])
    torch.testing.assert_close(term(ctx), expected)


def test_magmom_integer_default_margin_is_the_seeds_0_05() -> None:
    term = build_term({"term": "magmom_integer", "predictor": "m"})
    assert term.reads == ["m.magmom_total"]  # the net moment by default
    # per formula unit: 2.03 (inside the margin), 2.2, 2.5, 3.96 (inside), 1.0
    ctx = _ctx({"m.magmom_total": [2.03, 2.2, 5.0, 7.92, 4.0]}, [1, 1, 2, 2, 4])
    expected = torch.tensor([0.0, 0.15, 0.45, 0.0, 0.0])
    torch.testing.assert_close(term(ctx), expected)


def test_magmom_nonnegative_acts_on_the_net_moment() -> None:
    term = build_term({"term": "magmom_nonnegative", "predictor": "m"})
    assert term.reads == ["m.magmom_total"]
    ctx = _ctx({"m.magmom_total": [-1.5, 0.0, 3.0]}, [1, 1, 1])
    torch.testing.assert_close(term(ctx), torch.tensor([1.5, 0.0, 0.0]))


def _chgnet_campaign(loss: dict) -> object:
    return perovskite_campaign(
        predictors={"chgnet": {"type": "chgnet"}},
        losses=[{"term": "tolerance_factor", "target": 0.9}, loss],
    )


def test_chgnet_has_no_net_moment_and_the_error_names_the_fix() -> None:
    camp = _chgnet_campaign({"term": "magmom_integer", "predictor": "chgnet"})
    with pytest.raises(SpecError) as err:
        ProposalRun(camp, predictors={})  # caught without loading the model
    msg = str(err.value)
    assert msg.startswith("losses[1].property:")
    assert "magmom_abs_total" in msg and "not a net moment" in msg


def test_chgnet_abs_total_is_accepted() -> None:
    camp = _chgnet_campaign(
        {"term": "magmom_min", "predictor": "chgnet", "property": "magmom_abs_total"}
    )
    run = ProposalRun(camp, predictors={})
    assert run.terms[1].reads == ["chgnet.magmom_abs_total"]


class _GapOnly(Predictor):
    properties = {"band_gap": "eV"}

    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        return {"band_gap": torch.zeros(batch.n_crystals)}


def test_a_property_the_loaded_predictor_lacks_is_refused() -> None:
    camp = perovskite_campaign(
        predictors={"g": {"type": "alignn", "model": "x"}},
        losses=[{"term": "magmom_integer", "predictor": "g"}],
    )
    with pytest.raises(
        SpecError,
        match=r"losses\[0\]\.property: predictor 'g' has no property "
        r"'magmom_total' \(it predicts band_gap\)",
    ):
        ProposalRun(camp, predictors={"g": _GapOnly()})
