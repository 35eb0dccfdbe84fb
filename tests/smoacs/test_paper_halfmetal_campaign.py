"""campaigns/halfmetal.yaml (seed 000 §2.4) validates and builds its whole Flow offline:
no template download, no model load; the DFT-hull step of the funnel."""

from __future__ import annotations

from collections import Counter

import pytest

from smoacs_flows.campaign import load_campaign
from smoacs_flows.makers import HalfMetalCampaignMaker
from smoacs_flows.makers.settings import stage_settings
from smoacs_flows.makers.stages import select_for_dft, summarise
from smoacs_flows.smoacs.exclusions import preset_elements
from smoacs_flows.smoacs.propose import ProposalRun

from .helpers import ROOT

PATH = ROOT / "campaigns" / "halfmetal.yaml"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, no endpoint, and any predictor build or template download fails loudly."""
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.setenv("MP_API_ENDPOINT", "http://127.0.0.1:9/")

    def refuse(*a, **k):
        raise AssertionError("resolved a predictor or template while building the Flow")

    monkeypatch.setattr("smoacs_flows.predictors.base.build_predictor", refuse)
    monkeypatch.setattr("smoacs_flows.smoacs.propose.build_predictor", refuse)
    monkeypatch.setattr("smoacs_flows.smoacs.mp_templates.download", refuse)


def test_paper_campaign_settings() -> None:
    camp = load_campaign(PATH)
    sch = camp.schedule
    assert (sch.steps, sch.batch_size, sch.n_candidates) == (650, 150, 8192)
    assert sch.annealing.start_step == 300 and sch.annealing.keep == "current"
    assert sch.mutation.steps == [162, 324, 486] and sch.mutation.top_fraction == 0.2
    assert sch.graph_refresh.count == 46
    t = camp.templates[0]
    assert (t.source, t.max_sites, t.n) == ("mp", 30, 8192)
    assert {"rohs", "rare_earth", "supply_risk"} == set(camp.exclude)
    assert {"Cd", "Hg", "Pb", "Co", "Ni", "La", "Sc", "Y"} <= {
        el for p in camp.exclude for el in preset_elements(p)
    }
    kinds = {n: p["type"] for n, p in camp.predictors.items()}
    assert kinds == {"mattersim": "mattersim", "gap": "alignn", "magmom": "alignn"}
    terms = {loss.term: loss for loss in camp.losses}
    assert terms["magmom_integer"].property == "magmom_total"  # a net moment
    st = stage_settings(camp)
    assert st.screening.mlip == "mattersim" and st.screening.e_hull_max == 0.1
    assert st.screening.prefilter.max_elements == 5
    assert st.screening.references == "store"
    assert st.screening.reference_sources == ["mp", "alexandria"]
    assert st.dft.engine == "vasp" and st.dft.max_candidates is None
    assert st.dft.e_hull_max == 0.1
    weights = st.orchestration.sweep.points()
    assert len(weights) * t.n == 49_152  # the paper's number of proposals
    assert min(min(w.values()) for w in weights) == 1
    assert max(max(w.values()) for w in weights) == 100


def test_paper_campaign_validates_and_builds_its_flow_offline(offline) -> None:
    camp = load_campaign(PATH)
    run = ProposalRun(camp, predictors={}, remote_templates=False)
    assert run.templates == []  # resolved on the worker
    flow = HalfMetalCampaignMaker().make(camp)  # validate=True: every sweep point checked
    stages = Counter(j.metadata["stage"] for j, _ in flow.iterflow())
    n_batches = -(-8192 // 150)
    assert stages["propose"] == 6 * n_batches
    assert stages["sun"] == 1 and stages["dft"] == 1 and stages["summary"] == 1
    summary = next(j for j, _ in flow.iterflow() if j.metadata["stage"] == "summary")
    assert summary.function_args[2] == 0.1


def _hm(cid: str, hull: float | None, verdict: str = "half_metal") -> dict:
    return {
        "candidate_id": cid,
        "analysis": {"verdict": verdict},
        "hull": {"e_above_hull": hull},
        "moment_per_fu": 3.0,
    }


def test_funnel_ends_with_the_dft_hull() -> None:
    sun = {
        "counts": {"proposed": 9, "prefiltered": 8, "relaxed": 7, "sun": 4},
        "records": [{"id": f"c{i}", "screening": {}} for i in range(4)],
    }
    results = [_hm("c0", 0.05), _hm("c1", 0.3), _hm("c2", None), _hm("c3", 0.0, "metal")]
    out = summarise(sun, results, e_hull_max=0.1)
    assert out["funnel"][-2:] == [("half-metal", 3), ("DFT hull ≤ 0.1", 1)]
    assert any("1 half-metal(s) without a DFT hull" in n for n in out["notes"])
    assert summarise(sun, results)["funnel"][-1] == ("half-metal", 3)


def test_every_survivor_goes_to_dft_when_max_candidates_is_null() -> None:
    st = stage_settings(load_campaign(PATH)).dft
    recs = [{"id": f"c{i}", "screening": {"e_above_hull": 0.1 - 0.01 * i}} for i in range(7)]
    chosen = select_for_dft(recs, st)
    assert [r["id"] for r in chosen] == [f"c{i}" for i in range(6, -1, -1)]


def test_the_alignn_proxies_are_jarvis_models_and_offline_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import requests
    from alignn.pretrained import ALIGNN2_MODELS

    from smoacs_flows.errors import InputError
    from smoacs_flows.predictors.base import build_predictor

    camp = load_campaign(PATH)
    targets = {"gap": "optb88vdw_bandgap", "magmom": "magmom_oszicar"}
    for name, target in targets.items():
        assert ALIGNN2_MODELS[camp.predictors[name]["model"]]["target"] == target

    def no_network(*a, **k):
        raise requests.ConnectionError("offline")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("alignn.pretrained.requests.get", no_network)
    for name in targets:
        with pytest.raises(InputError, match="could not be downloaded.*network allows"):
            build_predictor(camp.predictors[name])
