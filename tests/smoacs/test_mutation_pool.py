"""Mutation as seed 000 (SI B.3) describes it: donors from groups A + B of the whole batch.

The shipped campaigns have one candidate per template (halfmetal.yaml: 8,192 / 8,192;
perovskite.yaml: 256 / 256), so donors restricted to the same template never exist there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

from smoacs_flows.campaign import load_campaign
from smoacs_flows.smoacs.engine import EngineSettings, Evaluator, SmoacsOptimizer
from smoacs_flows.smoacs.oxidation import load_policy
from smoacs_flows.smoacs.propose import ProposalRun
from smoacs_flows.smoacs.state import CandidateState, prepare_template
from smoacs_flows.smoacs.templates import Template

from .helpers import ROOT, perovskite_campaign


def _optimizer(state: CandidateState, run: ProposalRun, donors: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    s = EngineSettings(**{**vars(run.settings), "mutation_donors": donors})
    return SmoacsOptimizer(state, Evaluator({}, []), s, gen)


def _count(state_fn, run: ProposalRun, donors: str) -> int:
    state = state_fn()
    b = state.n_crystals
    loss = torch.as_tensor(np.random.default_rng(1).permutation(b), dtype=torch.float32)
    opt = _optimizer(state, run, donors)
    return int(opt.mutate(loss, torch.zeros(b, dtype=torch.bool)).sum())


def test_perovskite_campaign_mutates_at_its_size() -> None:
    camp = load_campaign(ROOT / "campaigns" / "perovskite.yaml")
    run = ProposalRun(camp, predictors={})
    batch = run.batches[0]
    assert len(batch) == 256 and len(set(batch)) == 256  # one candidate per template

    def make() -> CandidateState:
        return run.make_state(batch, torch.Generator().manual_seed(0))

    assert _count(make, run, "template") == 0  # the old rule: no donor ever
    b = 256
    n_c = b - int(np.ceil(camp.schedule.mutation.top_fraction * b))
    got = _count(make, run, "batch")
    # each group-C member is replaced with probability `rate`: binomial, far from 0
    mean = n_c * camp.schedule.mutation.rate
    assert abs(got - mean) < 5 * np.sqrt(mean), (got, mean)


def _aflow_templates(n: int, max_sites: int = 30) -> list[Template]:
    """Real structure types (pymatgen's AFLOW library): MP-like site counts 1-30."""
    out = []
    for i, d in enumerate(AFLOW_PROTOTYPE_LIBRARY):
        s = d["snl"].structure
        if len(s) <= max_sites:
            out.append(Template(id=f"aflow-{i}", structure=s.copy()))
        if len(out) == n:
            break
    return out


def test_halfmetal_campaign_mutates_at_its_batch_size() -> None:
    camp = load_campaign(ROOT / "campaigns" / "halfmetal.yaml")
    run = ProposalRun(camp, predictors={}, remote_templates=False)
    bs = camp.schedule.batch_size
    temps = _aflow_templates(bs)  # MP templates are downloaded on the worker; same sizes
    table = load_policy(camp.policy)
    allowed = np.ones(98, dtype=bool)
    prepared = []
    for t in temps:
        try:
            prepared.append(prepare_template(t, table, allowed, 20))
        except Exception:  # noqa: BLE001 - a template with no neutral pattern is left out
            continue
    sizes = {pt.template.n_sites for pt in prepared}
    assert len(prepared) > 100 and len(sizes) > 10

    def make() -> CandidateState:
        return CandidateState(
            prepared,
            list(range(len(prepared))),
            angle_range=(30.0, 150.0),
            fix_angles=False,
            coord_mode="free",
            epsilon=0.05,
            default_length_range=(2.0, 30.0),
            logit_floor=-1.0,
            init_scale=1.0,
            generator=torch.Generator().manual_seed(0),
        )

    assert _count(make, run, "template") == 0
    assert _count(make, run, "batch") > 10


def test_a_copy_adopts_its_donors_template() -> None:
    camp = perovskite_campaign(
        templates=[
            {"source": "perovskite", "count": 4, "patterns": [[2, 4, -2]]},
            {"source": "perovskite", "count": 4, "patterns": [[1, 2, -1]]},
        ],
        schedule={"n_candidates": 8, "batch_size": 8},
    )
    run = ProposalRun(camp)
    assign = list(range(8))
    state = run.make_state(assign, torch.Generator().manual_seed(0))
    opt = _optimizer(state, run, "batch", seed=3)
    opt.s.mutation_rate = 1.0
    opt.s.top_fraction = 0.125  # one donor: candidate 6 (pattern +1/+2/-1)
    loss = torch.ones(8)
    loss[6] = 0.0
    replaced = opt.mutate(loss, torch.zeros(8, dtype=torch.bool))
    assert replaced.sum() == 7
    donor_pattern = tuple(run.prepared[6].patterns[0])
    assert donor_pattern == (1, 2, -1, -1, -1)
    for c in range(8):
        assert state.assignment[c] == 6
        assert tuple(state.patterns[c, 0].tolist()) == donor_pattern
        # the masks follow: the A site (+1) allows K, not Sr
        a_site = int(torch.nonzero(state.crystal_index == c)[0])
        assert state.masks[a_site, 0, 18]  # K (Z=19)
        assert not state.masks[a_site, 0, 37]  # Sr (Z=38)
    # the exported crystal obeys its (new) template's pattern
    z = state.discrete()["atomic_numbers"]
    table = load_policy(camp.policy)
    for c in range(8):
        a_site = int(torch.nonzero(state.crystal_index == c)[0])
        assert 1 in table.allowed(int(z[a_site]))  # a +1 cation on A, as the donor's pattern


def test_sizes_must_match() -> None:
    run = ProposalRun(perovskite_campaign())
    state = run.make_state([0, 1], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="sites"):
        # forge a size mismatch: the buffers of a 5-site candidate cannot take 3 sites
        state.n_sites[1] = 3
        state.adopt_template(0, 1)
