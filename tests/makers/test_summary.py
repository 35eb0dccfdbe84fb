"""The campaign summary: funnel and top candidates, DFT'd ones always listed."""

from __future__ import annotations

from smoacs_flows.makers.stages import format_summary, summarise


def test_dft_candidates_listed_even_beyond_the_top():
    recs = [
        {
            "id": f"c{i:02d}",
            "reduced_formula": "X",
            "screening": {"mlip_energy_per_atom": float(i), "e_above_hull": None},
        }
        for i in range(15)
    ]
    sun = {"records": recs, "counts": {"proposed": 20, "prefiltered": 18, "relaxed": 15, "sun": 15}}
    dft = [
        {
            "candidate_id": "c14",
            "moment_per_fu": 3.0,
            "analysis": {"verdict": "half_metal", "polarisation": 1.0},
        },
        {
            "candidate_id": "c12",
            "moment_per_fu": 0.0,
            "analysis": {"verdict": "nonmagnetic_metal", "polarisation": 0.0},
        },
    ]
    out = summarise(sun, dft, top=3)
    ids = [r["id"] for r in out["top"]]
    assert ids[:2] == ["c12", "c14"] and ids[2] == "c00" and len(ids) == 3
    assert dict(out["funnel"])["DFT"] == 2 and dict(out["funnel"])["half-metal"] == 1
    text = format_summary(out)
    assert "half_metal (3.00 μB/f.u.)" in text and "funnel: proposed 20" in text
