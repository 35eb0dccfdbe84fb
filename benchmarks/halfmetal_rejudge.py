"""Re-judge the half-metal benchmark's candidates under the offline MLIP prototype hull.

``benchmarks/halfmetal_hits.py`` ran GPAW on every S.U.N. survivor of three arms (60
proposals each) when "S.U.N." offline was a formation energy against the shipped DFT
elemental energies. This script regenerates the same proposals and CHGNet relaxations (same
code paths, same seeds; the candidate ids and formulas are checked against that JSON), screens
them with the current S.U.N. stage (the prototype hull of ``screening.prototype_hull``) and
reports, per arm: which earlier survivors fall out and why, which candidates pass now that did
not, the S.U.N. half-metal count from the cached DFT verdicts, and the hull stage's cost
(phases per system, CPU seconds, cache hits). ``--dft`` runs GPAW on new survivors that have
no DFT result yet (cached per candidate under ``--work``). Usage:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/halfmetal_rejudge.py \
        [--arms smoacs,smoacs_sp,random] [--work DIR] [--out FILE] [--dft]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from halfmetal_hits import (  # noqa: E402
    ARMS,
    ROOT,
    _dump,
    _load,
    arm_campaign,
    dft_one,
    propose,
)

OLD = ROOT / "benchmarks" / "results" / "halfmetal_hits.json"


def screen_arm(camp: Any, proposals: dict[str, Any]) -> dict[str, Any]:
    """Prefilter, CHGNet relaxation (cached apart: it does not depend on the hull) and the
    current S.U.N. stage, timed separately."""
    from smoacs_flows.makers import stages
    from smoacs_flows.makers.settings import stage_settings

    st = stage_settings(camp).screening.model_dump()
    t0 = time.process_time()
    pre = stages.prefilter([proposals], st, camp.policy)
    rel = stages.relax(pre, st)
    t1 = time.process_time()
    sun = stages.sun_filter([rel], st, str(camp.base_dir))
    return {
        "relaxed": rel,
        "sun": sun,
        "relax_cpu_s": t1 - t0,
        "sun_cpu_s": time.process_time() - t1,
    }


def rejudge(arm: str, args: argparse.Namespace, old: dict[str, Any]) -> dict[str, Any]:
    """One arm: the new screening next to the old DFT rows."""
    d = args.work / arm
    d.mkdir(parents=True, exist_ok=True)
    camp = arm_campaign(args.campaign, arm, old["n_proposals_per_arm"])
    if _load(d / "proposals.json") is None:
        _dump(d / "proposals.json", propose(camp, arm))
    if _load(d / "screen.json") is None:
        _dump(d / "screen.json", screen_arm(camp, _load(d / "proposals.json")))
    scr = _load(d / "screen.json")
    sun = scr["sun"]
    old_rows = {r["id"]: r for r in old["arms"][arm]["dft"]}
    formulas = {r["id"]: r.get("reduced_formula") for r in _load(d / "proposals.json")["records"]}
    mismatch = [i for i, r in old_rows.items() if formulas.get(i) != r["formula"]]
    if mismatch:
        raise SystemExit(f"[{arm}] proposals differ from {OLD.name}: {mismatch[:5]}")
    survivors = {r["id"]: r for r in sun["records"]}
    scores, rejected = sun["scores"], sun["rejected"]
    fell_out, kept = [], []
    for cid, row in old_rows.items():
        sc = scores.get(cid, {})
        item = {
            "id": cid,
            "formula": row["formula"],
            "prototype": row.get("prototype"),
            "verdict": row.get("verdict"),
            "old_e_vs_elements": row.get("e_above_hull"),
            "e_above_hull": sc.get("e_above_hull"),
            "hull_distance": sc.get("hull_distance"),
            "novel": sc.get("novel"),
        }
        if cid in survivors:
            kept.append(item)
        else:
            fell_out.append({**item, "why": rejected.get(cid)})
    new = [
        {
            "id": cid,
            "formula": r.get("reduced_formula"),
            "e_above_hull": r["screening"].get("e_above_hull"),
            "dft": _load(d / "dft" / f"{cid}.json"),
        }
        for cid, r in survivors.items()
        if cid not in old_rows
    ]
    if args.dft:
        for item in new:
            if item["dft"] is None:
                print(f"[{arm}] GPAW {item['formula']} ({item['id']})", flush=True)
                item["dft"] = dft_one(camp, survivors[item["id"]], d / "gpaw")
                _dump(d / "dft" / f"{item['id']}.json", item["dft"])
    hm = [k for k in kept if k["verdict"] == "half_metal"]
    hm += [n for n in new if (n["dft"] or {}).get("verdict") == "half_metal"]
    return {
        "counts": sun["counts"],
        "sun_label": sun.get("sun_label"),
        "hull": sun.get("hull"),
        "notes": sun.get("notes"),
        "relax_cpu_s": scr["relax_cpu_s"],
        "sun_cpu_s": scr["sun_cpu_s"],
        "old_survivors": len(old_rows),
        "still_survive": kept,
        "fell_out": fell_out,
        "new_survivors": new,
        "new_survivors_without_dft": sum(1 for n in new if n["dft"] is None),
        "sun_half_metals": hm,
        "sun_dft_verdicts": _verdicts(kept, new),
    }


def _verdicts(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in [k["verdict"] for k in kept] + [(n["dft"] or {}).get("verdict") for n in new]:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Re-judge the arms and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--campaign", type=Path, default=ROOT / "campaigns" / "halfmetal_small.yaml")
    p.add_argument("--work", type=Path, default=Path("/tmp/halfmetal_rejudge"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/halfmetal_rejudge.json")
    p.add_argument("--dft", action="store_true", help="GPAW on new survivors without DFT")
    args = p.parse_args(argv)
    os.environ.setdefault("SMOACS_HOME", str(args.work / "home"))
    old = json.loads(OLD.read_text())
    t0 = time.perf_counter()
    arms = {a: rejudge(a, args, old) for a in args.arms.split(",")}
    report = {
        "benchmark": "halfmetal_rejudge",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/halfmetal_rejudge.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "dft_from": str(OLD.relative_to(ROOT)),
        "wall_s": time.perf_counter() - t0,
        "arms": arms,
    }
    _dump(args.out, report)
    for a, r in arms.items():
        print(
            f"{a}: {r['sun_label']} {r['counts'].get('sun')} (was {r['old_survivors']}); "
            f"fell out {len(r['fell_out'])}, new {len(r['new_survivors'])} "
            f"({r['new_survivors_without_dft']} without DFT); S.U.N. half-metals "
            f"{len(r['sun_half_metals'])}; hull stage {r['sun_cpu_s']:.0f} CPU s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
