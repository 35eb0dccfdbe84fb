"""``schedule.outer_softmax``: seed 001 eq. 9's second σ_T over the pattern mixture."""

from __future__ import annotations

import torch

from smoacs_flows.smoacs.oxidation import load_policy
from smoacs_flows.smoacs.propose import ProposalRun

from .helpers import perovskite_campaign


def _probs(outer: bool, t: float) -> tuple[torch.Tensor, ProposalRun]:
    camp = perovskite_campaign(schedule={"outer_softmax": outer})
    run = ProposalRun(camp)
    state = run.make_state([0, 1, 2], torch.Generator().manual_seed(0))
    with torch.no_grad():
        state.elem_logits.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    batch, _ = state(t)
    return batch.element_probs.detach(), run


def test_outer_softmax_sharpens_inside_the_masks() -> None:
    plain, run = _probs(False, 0.01)
    sharp, _ = _probs(True, 0.01)
    torch.testing.assert_close(sharp.sum(-1), torch.ones(sharp.shape[0]))
    # an element no pattern allows at a site stays exactly 0
    assert torch.equal(sharp == 0, plain == 0)
    # the same winner per site, and a distribution at least as peaked (max prob, entropy)
    assert torch.equal(sharp.argmax(-1), plain.argmax(-1))
    assert (sharp.max(-1).values >= plain.max(-1).values - 1e-6).all()
    ent = lambda p: -(p.clamp_min(1e-30).log() * p).sum(-1)  # noqa: E731
    assert ent(sharp).mean() < ent(plain).mean()
    # the A site (+2 or +1) never gets an anion
    table = load_policy("ionic")
    for z in torch.nonzero(sharp[0] > 0).flatten().tolist():
        assert {1, 2} & set(table.allowed(z + 1))


def test_off_by_default() -> None:
    assert perovskite_campaign().schedule.outer_softmax is False
