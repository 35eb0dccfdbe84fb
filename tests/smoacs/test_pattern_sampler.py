"""Oxidation patterns: a seeded sample, uniform over every charge-neutral pattern.

The reference is brute force: every assignment of allowed numbers to the sites, filtered to
sum zero (itertools.product), independent of the sampler's completion counts.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.errors import SpecError
from smoacs_flows.smoacs.oxidation import count_patterns, load_policy, sample_patterns
from smoacs_flows.smoacs.propose import ProposalRun
from smoacs_flows.smoacs.state import prepare_template
from smoacs_flows.smoacs.templates import Template

from .helpers import ROOT

IONIC = load_policy("ionic")
ALL = np.ones(98, dtype=bool)


def _brute(n: int, table=IONIC) -> list[tuple[int, ...]]:
    vals = table.values()
    return [p for p in itertools.product(vals, repeat=n) if sum(p) == 0]


def test_count_matches_brute_force() -> None:
    for n in (1, 2, 3, 4, 5):
        assert count_patterns([ALL] * n, IONIC) == len(_brute(n))


def test_every_pattern_when_there_are_few() -> None:
    assert sample_patterns([ALL] * 2, IONIC, 100, seed=5) == sorted(_brute(2))


def test_sample_is_uniform_over_neutral_patterns() -> None:
    every = _brute(5)  # 11^5 assignments; a few thousand neutral
    assert len(every) > 20 * 100  # the rejection-sampling branch
    # expected per-site marginal of the uniform distribution over neutral patterns
    vals = IONIC.values()
    expect = np.array([sum(p[0] == v for p in every) for v in vals], float) / len(every)
    counts: Counter[int] = Counter()
    draws = 0
    for seed in range(40):
        pats = sample_patterns([ALL] * 5, IONIC, 100, seed=seed)
        assert len(pats) == len(set(pats)) == 100
        assert all(sum(p) == 0 for p in pats)
        for p in pats:
            for site in range(5):  # sites are exchangeable: pool them
                counts[p[site]] += 1
                draws += 1
    obs = np.array([counts[v] for v in vals], float)
    assert chisquare(obs, expect * draws).pvalue > 1e-4
    # the old first-100 enumeration fails this: its first site is a single value
    assert len({p[0] for p in sample_patterns([ALL] * 5, IONIC, 100, seed=0)}) >= 8


def test_large_templates_vary_every_site() -> None:
    pats = sample_patterns([ALL] * 24, IONIC, 100, seed=1)
    assert len(set(pats)) == 100 and all(sum(p) == 0 for p in pats)
    for site in range(24):
        assert len({p[site] for p in pats}) >= 6  # not "11 sites fixed at +4"
    assert pats == sample_patterns([ALL] * 24, IONIC, 100, seed=1)  # seeded
    assert pats != sample_patterns([ALL] * 24, IONIC, 100, seed=2)


def test_site_masks_are_respected() -> None:
    cation = IONIC.mask(2) | IONIC.mask(3)
    anion = IONIC.mask(-2)
    pats = sample_patterns([cation, cation, anion, anion, anion], IONIC, 50, seed=0)
    for p in pats:
        assert all((IONIC.mask(o) & m).any() for o, m in zip(p, [cation, cation] + [anion] * 3))
        assert sum(p) == 0


def test_prepared_patterns_do_not_depend_on_order() -> None:
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(5), ["Na"] * 6, np.random.default_rng(0).random((6, 3)))
    t1, t2 = Template("a", s), Template("b", s)
    p_a = prepare_template(t1, IONIC, ALL, 30, seed=4).patterns
    prepare_template(t2, IONIC, ALL, 30, seed=4)
    assert prepare_template(t1, IONIC, ALL, 30, seed=4).patterns == p_a
    assert prepare_template(t2, IONIC, ALL, 30, seed=4).patterns != p_a  # id-seeded


def _mp_campaign(tmp_path, policy: str):
    from pymatgen.core import Lattice, Structure

    from smoacs_flows.smoacs.mp_templates import cache_path, query_of

    structs = {
        "mp-1": Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]]).as_dict(),
        "mp-2": Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]).as_dict(),
    }
    query = query_of(30, 2, {}, 0)
    path = cache_path(query, tmp_path / "mp.json.gz")
    import gzip
    import json

    prov = {"material_ids": ["mp-1", "mp-2"], "database_version": "x"}
    payload = {"provenance": prov, "structures": structs}
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    spec = {
        "name": "t",
        "seed": 0,
        "device": "cpu",
        "templates": [{"source": "mp", "max_sites": 30, "n": 2, "cache": str(path)}],
        "policy": policy,
        "losses": [{"term": "element_reduction"}],
        "schedule": {"steps": 2, "n_candidates": 4, "batch_size": 4},
    }
    return campaign_from_dict(spec, base_dir=ROOT / "campaigns")


def test_one_site_mp_templates_are_left_out_under_the_ionic_policy(tmp_path, caplog) -> None:
    run = ProposalRun(_mp_campaign(tmp_path, "ionic"), predictors={})
    assert [t.id for t in run.templates] == ["mp-2"]
    assert run.templates_left_out == ["mp-1"]
    assert "mp-1" in caplog.text and "charge-neutral" in caplog.text
    res = run.run()  # the batch runs instead of failing
    assert len(res.records) == 4
    # under ionic+metallic, bcc Fe has the pattern (0,) and stays
    run = ProposalRun(_mp_campaign(tmp_path, "ionic+metallic"), predictors={})
    assert [t.id for t in run.templates] == ["mp-1", "mp-2"]
    assert run.prepared[0].patterns == [(0,)]


def test_a_one_site_file_template_still_names_itself(tmp_path) -> None:
    from pymatgen.core import Lattice, Structure

    Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]]).to(filename=str(tmp_path / "fe.cif"))
    spec = {
        "name": "t",
        "device": "cpu",
        "templates": [{"source": str(tmp_path / "fe.cif")}],
        "policy": "ionic",
        "losses": [{"term": "element_reduction"}],
        "schedule": {"steps": 2, "n_candidates": 2, "batch_size": 2},
    }
    with pytest.raises(SpecError, match="fe"):
        ProposalRun(campaign_from_dict(spec, base_dir=tmp_path), predictors={})
