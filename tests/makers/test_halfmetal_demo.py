"""The demo campaign: nothing seeded, ranked for half-metals, summary with spin gaps."""

from __future__ import annotations

import numpy as np

from smoacs_flows.campaign import load_campaign
from smoacs_flows.makers.settings import stage_settings
from smoacs_flows.makers.stages import format_summary, summarise
from smoacs_flows.smoacs.propose import build_templates
from tests.makers._campaign import ROOT

DEMO = ROOT / "campaigns" / "halfmetal_small.yaml"


def test_demo_templates_seed_no_composition() -> None:
    camp = load_campaign(DEMO)
    temps = build_templates(camp, np.random.default_rng(0))
    fams = {t.meta.get("family") for t in temps}
    assert {"full_heusler", "half_heusler", "zincblende", "rocksalt"} <= fams
    for t in temps:  # geometry only: noble-gas placeholders, never a candidate element
        assert {el.symbol for el in t.structure.composition.elements} <= {"He", "Ne", "Ar", "Kr"}
    st = stage_settings(camp)
    assert st.dft.rank_by == "halfmetal" and st.dft.max_candidates >= 8
    assert st.screening.references == "mp-or-elements"


def test_summary_prints_each_dft_verdict_with_its_spin_gap() -> None:
    recs = [
        {
            "id": f"c{i}",
            "reduced_formula": f"X{i}",
            "template_id": "zincblende_B3",
            "screening": {"mlip_energy_per_atom": -float(i), "e_above_hull": 0.0},
        }
        for i in range(3)
    ]
    sun = {"records": recs, "counts": {"proposed": 3, "prefiltered": 3, "relaxed": 3, "sun": 3}}
    dft = [
        {
            "candidate_id": "c0",
            "moment_per_fu": 3.0,
            "analysis": {
                "verdict": "half_metal",
                "gapped_channel": "down",
                "gaps": {"down": {"gap": 1.234}, "up": {"gap": None}},
            },
        },
        {"candidate_id": "c1", "moment_per_fu": 2.4, "analysis": {"verdict": "magnetic_metal"}},
    ]
    text = format_summary(summarise(sun, dft))
    assert "half_metal (3.00 μB/f.u.), minority-spin gap 1.23 eV [zincblende_B3]" in text
    assert "magnetic_metal (2.40 μB/f.u.) [zincblende_B3]" in text
    assert "DFT verdicts: half_metal 1, magnetic_metal 1" in text
    assert (
        "funnel: proposed 3 → prefiltered 3 → relaxed 3 → S.U.N. 3 → DFT 2 → half-metal 1" in text
    )


def test_report_draws_the_spin_dos_of_every_dft_candidate(tmp_path) -> None:
    from smoacs_flows.stores.report import write_report

    grid = [-3.0 + 0.01 * i for i in range(601)]
    dos = {"energies": grid, "up": [1.0] * 601, "down": [0.5] * 601, "efermi": 0.0}
    docs = [
        {
            "candidate_id": "mm",
            "stage": "dft",
            "formula": "FeS",
            "dft": {"verdict": "magnetic_metal", "moment_per_fu": 2.0},
        },
        {"candidate_id": "nodos", "stage": "dft", "dft": {"verdict": "semiconductor"}},
    ]
    text = write_report(docs, tmp_path / "r.html", "t", dos={"mm": dos}).read_text()
    assert "dos:mm" in text and "dos:nodos" not in text
    assert "magnetic_metal, 2.00 μB/f.u." in text
    assert "0 half-metals, 2 DFT&#x27;d" in text or "0 half-metals, 2 DFT'd" in text
