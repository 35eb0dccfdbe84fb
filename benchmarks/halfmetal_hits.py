"""Half-metal hit rate on real DFT: SMOACS vs SMOACS + Slater–Pauling vs random proposals.

Three arms share the campaign (templates, exclusions, oxidation policy), the prefilter, the
CHGNet relaxation, the stability screening against the references available offline, the
ranking (``screening.halfmetal_rank``: magnetic, near-integer moment, few elements, low
energy) and the GPAW settings; they differ only in how the proposals are made:

* ``smoacs``: the campaign's own loss, optimised;
* ``smoacs_sp``: the same plus the Slater–Pauling term (``slater_pauling``, weight 1);
* ``smoacs_gap``: the campaign's loss plus seed 000's gap → 0 term (``metallicity``, weight 1)
  on matgl's MP-trained MEGNet band-gap model at PBE fidelity (issue 21);
* ``random``: no optimisation: each candidate is a template with a uniformly random neutral
  oxidation pattern and, per site, a uniformly random element allowed by that pattern's mask
  (the same masks, exclusions and neutrality policy), at the template's geometry.

The top K of each arm's S.U.N. survivors go to GPAW. Everything is cached per arm under
``--work`` (proposals, relaxation, ranking, one file per DFT run), so a stopped run resumes
where it was, and a larger ``--k`` later extends the ranked list (the earlier list must be
its head) and runs only the new DFT; the JSON (``--out``) is rebuilt from the caches and
rewritten atomically after every DFT run and every arm. A second process per arm with
``--reverse`` works through the DFT list from its end (a ``.running`` marker per candidate
keeps two processes apart). Usage (one thread per process; arms may run side by side):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/halfmetal_hits.py --arms smoacs,random \
        [--n 60] [--k 12] [--campaign campaigns/halfmetal_small.yaml] [--out FILE] [--work DIR]
    .venv/bin/python benchmarks/halfmetal_hits.py --report   # rebuild the JSON only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402

from smoacs_flows.campaign import load_campaign  # noqa: E402
from smoacs_flows.io import atomic_write_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("smoacs", "smoacs_sp", "smoacs_gap", "random")
#: the MP band-gap model of the ``smoacs_gap`` arm (matgl's MEGNet, PBE fidelity; issue 21)
GAP_PREDICTOR = {"type": "megnet", "model": "megnet-mp-2019-bandgap", "fidelity": "PBE"}
VERDICTS = ("half_metal", "near_half_metal", "magnetic_metal", "nonmagnetic_metal", "semiconductor")


def _dump(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def arm_campaign(campaign_path: Path, arm: str, n: int) -> Any:
    """The campaign of an arm (the SP arm adds the Slater–Pauling term)."""
    camp = load_campaign(campaign_path)
    camp = camp.model_copy(deep=True)
    camp.schedule.n_candidates = n
    if arm == "smoacs_gap":
        from smoacs_flows.campaign import LossSpec

        # seed 000's gap -> 0 term (eq. 11, margin 0.01 eV) on an MP-trained band-gap model
        camp.predictors = {**camp.predictors, "gap": dict(GAP_PREDICTOR)}
        camp.losses = [
            *camp.losses,
            LossSpec(term="metallicity", predictor="gap", property="band_gap", weight=1.0),
        ]
    if arm == "smoacs_sp":
        from smoacs_flows.campaign import LossSpec

        camp.losses = [
            *camp.losses,
            LossSpec(
                term="slater_pauling",
                predictor="chgnet",
                property="magmom_abs_total",
                weight=1.0,
            ),
        ]
    return camp


def propose(camp: Any, arm: str) -> dict[str, Any]:
    """Proposal records of an arm (optimised, or random at the template geometry)."""
    from smoacs_flows.smoacs.engine import Evaluator
    from smoacs_flows.smoacs.propose import ProposalRun

    t_cpu, t_wall = time.process_time(), time.perf_counter()
    run = ProposalRun(camp)
    if arm == "random":
        ev = Evaluator(run.predictors, run.terms, run.criteria.soft_success)
        records = []
        for bi, assignment in enumerate(run.batches):
            gen = torch.Generator().manual_seed(run.seed * 1_000_003 + bi)
            state = run.make_state(assignment, gen)
            records += run.export(state, ev, bi)[0]
    else:
        records = run.run().records
    return {
        "records": records,
        "counts": {"proposed": len(records)},
        "cpu_s": time.process_time() - t_cpu,
        "wall_s": time.perf_counter() - t_wall,
    }


def screen(camp: Any, proposals: dict[str, Any], work: Path) -> dict[str, Any]:
    """Prefilter, CHGNet relaxation and S.U.N. exactly as the campaign's flow runs them."""
    from smoacs_flows.makers import stages
    from smoacs_flows.makers.settings import stage_settings

    st = stage_settings(camp).screening.model_dump()
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    os.environ.setdefault("SMOACS_HOME", str(work / "home"))
    pre = stages.prefilter([proposals], st, camp.policy)
    rel = stages.relax(pre, st)
    sun = stages.sun_filter([rel], st, str(camp.base_dir))
    return {
        "sun": sun,
        "cpu_s": time.process_time() - t_cpu,
        "wall_s": time.perf_counter() - t_wall,
    }


def dft_one(camp: Any, rec: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """GPAW on one candidate with the campaign's DFT settings; a failure is recorded."""
    from smoacs_flows.makers import stages
    from smoacs_flows.makers.settings import stage_settings

    dft = stage_settings(camp).dft.model_dump()
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    try:
        out = stages.run_gpaw(rec, dft, str(work_dir))
        a = out.get("analysis") or {}
        res = {
            "ok": True,
            "verdict": a.get("verdict"),
            "moment_per_fu": out.get("moment_per_fu"),
            "total_moment": out.get("total_moment"),
            "formula": out.get("reduced_formula"),
            "gapped_channel": a.get("gapped_channel"),
            "half_metallic_gap": a.get("half_metallic_gap"),
            "gaps": a.get("gaps"),
            "polarisation": a.get("polarisation"),
            "warnings": a.get("warnings"),
            "kpts": [out["settings"].get("scf_kpts"), out["settings"].get("nscf_kpts")],
            "timings": out.get("timings"),
        }
    except Exception as exc:  # noqa: BLE001 - recorded per candidate
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
        traceback.print_exc()
    res["cpu_s"] = time.process_time() - t_cpu
    res["wall_s"] = time.perf_counter() - t_wall
    return res


def minority_gap(res: dict[str, Any]) -> float | None:
    """CBM − VBM of the gapped channel (eV), from the eigenvalues."""
    ch = res.get("gapped_channel")
    g = (res.get("gaps") or {}).get(ch) if ch else None
    return None if not g else g.get("gap")


def arm_summary(arm: str, work: Path, k: int) -> dict[str, Any] | None:
    """What an arm has finished so far, from its caches."""
    d = work / arm
    prop, scr, ranked = (
        _load(d / "proposals.json"),
        _load(d / "screen.json"),
        _load(d / "ranked.json"),
    )
    if prop is None:
        return None
    out: dict[str, Any] = {"proposed": len(prop["records"]), "proposal_cpu_s": prop["cpu_s"]}
    if scr is None:
        return out
    counts = scr["sun"]["counts"]
    out.update(
        prefiltered=counts.get("prefiltered"),
        relaxed=counts.get("relaxed"),
        stable=counts.get("stable"),
        sun=counts.get("sun"),
        screening_cpu_s=scr["cpu_s"],
        stability_notes=scr["sun"].get("notes"),
    )
    if ranked is None:
        return out
    rows, verdicts = [], dict.fromkeys(VERDICTS, 0)
    dft_cpu, failed = 0.0, 0
    for rec in ranked["records"]:
        res = _load(d / "dft" / f"{rec['id']}.json")
        if res is None:
            continue
        dft_cpu += res["cpu_s"]
        if not res.get("ok"):
            failed += 1
        elif res.get("verdict") in verdicts:
            verdicts[res["verdict"]] += 1
        rows.append(
            {
                "id": rec["id"],
                "formula": rec.get("reduced_formula"),
                "prototype": rec.get("template_id"),
                "family": rec.get("template_family"),
                "rank_score": rec.get("rank_score"),
                "e_above_hull": (rec.get("screening") or {}).get("e_above_hull"),
                "chgnet_abs_moment_per_fu": rec.get("chgnet_abs_moment_per_fu"),
                "verdict": res.get("verdict") if res.get("ok") else "failed",
                "moment_per_fu": res.get("moment_per_fu"),
                "minority_gap": minority_gap(res),
                "half_metallic_gap": res.get("half_metallic_gap"),
                "gapped_channel": res.get("gapped_channel"),
                "polarisation": res.get("polarisation"),
                "error": res.get("error"),
                "dft_cpu_s": res["cpu_s"],
                "dft_wall_s": res["wall_s"],
            }
        )
    n_dft = len(rows)
    total_cpu = prop["cpu_s"] + scr["cpu_s"] + dft_cpu
    hm = verdicts["half_metal"]
    out.update(
        k=k,
        selected=len(ranked["records"]),
        dft_done=n_dft,
        dft_failed=failed,
        half_metals=hm,
        near_half_metals=verdicts["near_half_metal"],
        magnetic_metals=verdicts["magnetic_metal"],
        nonmagnetic_metals=verdicts["nonmagnetic_metal"],
        semiconductors=verdicts["semiconductor"],
        hit_rate=None if n_dft == 0 else hm / n_dft,
        dft_cpu_s=dft_cpu,
        total_cpu_s=total_cpu,
        cpu_s_per_half_metal=None if hm == 0 else total_cpu / hm,
        half_metal_list=[
            {
                key: r[key]
                for key in (
                    "formula",
                    "prototype",
                    "moment_per_fu",
                    "minority_gap",
                    "half_metallic_gap",
                    "gapped_channel",
                )
            }
            for r in rows
            if r["verdict"] == "half_metal"
        ],
        dft=rows,
    )
    return out


def fisher_vs_random(arms: dict[str, Any]) -> dict[str, Any]:
    """Half-metals / DFT runs of each SMOACS arm against random (and, ``_magnetic``, DFT
    verdicts with a spin-split Fermi level: half-metal, near-half-metal or magnetic metal), at
    the top 12 of the ranking (the first run's K) and over every DFT'd candidate, with scipy's
    two-sided Fisher exact test (the ratio of two rates near zero means little on its own)."""
    from scipy.stats import fisher_exact

    def counts(v: dict[str, Any], top: int | None, kinds: set[str]) -> tuple[int, int]:
        rows = (v.get("dft") or [])[:top]  # rows follow the ranking
        return sum(r["verdict"] in kinds for r in rows), len(rows)

    out: dict[str, Any] = {}
    what = {"": {"half_metal"}, "_magnetic": {"half_metal", "near_half_metal", "magnetic_metal"}}
    pairs = [(a, "random") for a in ("smoacs", "smoacs_sp", "smoacs_gap")]
    pairs.append(("smoacs_gap", "smoacs"))  # the gap term's own effect
    for a, base in pairs:
        if a not in arms or base not in arms:
            continue
        for label, top in (("top12", 12), ("all", None)):
            for suffix, kinds in what.items():
                (h1, n1) = counts(arms[a], top, kinds)
                (h0, n0) = counts(arms[base], top, kinds)
                if n1 and n0:
                    p = fisher_exact([[h1, n1 - h1], [h0, n0 - h0]])[1]
                    key = (
                        f"{a}_{label}{suffix}"
                        if base == "random"
                        else f"{a}_vs_{base}_{label}{suffix}"
                    )
                    out[key] = {"arm": [h1, n1], base: [h0, n0], "p": float(p)}
    return out


def write_report(args: argparse.Namespace, camp_path: Path) -> dict[str, Any]:
    """Rebuild the results JSON from every arm's caches (atomic rewrite)."""
    arms = {a: arm_summary(a, args.work, args.k) for a in ARMS}
    arms = {a: v for a, v in arms.items() if v is not None}
    rates = {a: v.get("hit_rate") for a, v in arms.items()}
    ratio = {}
    for a in ("smoacs", "smoacs_sp", "smoacs_gap"):
        if rates.get(a) is not None and rates.get("random") is not None:
            ratio[a] = None if rates["random"] == 0 else rates[a] / rates["random"]
    fisher = fisher_vs_random(arms)
    camp = load_campaign(camp_path)
    from smoacs_flows.makers.settings import stage_settings

    st = stage_settings(camp)
    report = {
        "benchmark": "halfmetal_hits",
        "command": " ".join(["benchmarks/halfmetal_hits.py", *sys.argv[1:]]),
        "campaign": str(
            camp_path.relative_to(ROOT) if camp_path.is_relative_to(ROOT) else camp_path
        ),
        "n_proposals_per_arm": args.n,
        "k_per_arm": args.k,
        "ranking": "screening.halfmetal_rank.halfmetal_score over the S.U.N. survivors",
        "screening": st.screening.model_dump(),
        "gpaw": st.dft.gpaw,
        "threads": "one per process (OMP/OPENBLAS/MKL_NUM_THREADS=1, torch 1 thread)",
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hit_rate_ratio_vs_random": ratio,
        "fisher_vs_random": fisher,
        "arms": arms,
    }
    _dump(args.out, report)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The per-arm table and the half-metals found, as Markdown (docs/benchmarks.md)."""
    arms = report["arms"]
    cols = [a for a in ARMS if a in arms]
    rows = [
        (
            "proposed → prefiltered → relaxed → S.U.N.",
            lambda v: " → ".join(
                str(v.get(k)) for k in ("proposed", "prefiltered", "relaxed", "sun")
            ),
        ),
        (
            "DFT done / selected (failed)",
            lambda v: f"{v.get('dft_done')} / {v.get('selected')} ({v.get('dft_failed')})",
        ),
        ("**half-metals / DFT'd**", lambda v: f"**{v.get('half_metals')} / {v.get('dft_done')}**"),
        ("near-half-metals", lambda v: str(v.get("near_half_metals"))),
        ("magnetic metals", lambda v: str(v.get("magnetic_metals"))),
        ("non-magnetic metals", lambda v: str(v.get("nonmagnetic_metals"))),
        ("semiconductors", lambda v: str(v.get("semiconductors"))),
        (
            "CPU s: proposals / screening / DFT",
            lambda v: " / ".join(
                f"{v.get(k) or 0:.0f}" for k in ("proposal_cpu_s", "screening_cpu_s", "dft_cpu_s")
            ),
        ),
        (
            "CPU s per half-metal",
            lambda v: (
                "—" if v.get("cpu_s_per_half_metal") is None else f"{v['cpu_s_per_half_metal']:.0f}"
            ),
        ),
    ]
    out = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, fn in rows:
        out.append(f"| {name} | " + " | ".join(fn(arms[a]) for a in cols) + " |")
    out += [
        "",
        "| arm | formula | prototype | moment (μB/f.u.) | minority gap (eV) | "
        "half-metallic gap (eV) |",
        "|---|---|---|---|---|---|",
    ]
    for a in cols:
        for h in arms[a].get("half_metal_list", []):

            def f(x: Any) -> str:
                return "—" if x is None else f"{x:.2f}"

            out.append(
                f"| {a} | {h['formula']} | {h['prototype']} | {f(h['moment_per_fu'])} | "
                f"{f(h['minority_gap'])} | {f(h['half_metallic_gap'])} |"
            )
    out += ["", "| arm | formula | prototype | verdict | moment |", "|---|---|---|---|---|"]
    for a in cols:
        for r in arms[a].get("dft", []):
            m = "—" if r["moment_per_fu"] is None else f"{r['moment_per_fu']:.2f}"
            out.append(f"| {a} | {r['formula']} | {r['prototype']} | {r['verdict']} | {m} |")
    return "\n".join(out)


def run_arm(arm: str, args: argparse.Namespace, camp_path: Path) -> None:
    """Every stage of one arm, each skipped when its cache exists."""
    from smoacs_flows.screening.halfmetal_rank import (
        halfmetal_score,
        moment_per_fu,
        rank_halfmetal,
    )

    d = args.work / arm
    d.mkdir(parents=True, exist_ok=True)
    camp = arm_campaign(camp_path, arm, args.n)
    if not (d / "proposals.json").exists():
        print(f"[{arm}] proposing {args.n}", flush=True)
        _dump(d / "proposals.json", propose(camp, arm))
    if not (d / "screen.json").exists():
        print(f"[{arm}] prefilter + relax + S.U.N.", flush=True)
        _dump(d / "screen.json", screen(camp, _load(d / "proposals.json"), args.work))
    survivors = _load(d / "screen.json")["sun"]["records"]
    old = _load(d / "ranked.json")
    if old is None or len(old["records"]) < min(args.k, len(survivors)):
        # ranked anew for a larger --k: the earlier list must be its head (DFT cached per id)
        top = rank_halfmetal(survivors, args.k)
        for r in top:
            r["rank_score"] = halfmetal_score(r)
            r["chgnet_abs_moment_per_fu"] = moment_per_fu(r)
        head = [r["id"] for r in (old or {"records": []})["records"]]
        if [r["id"] for r in top[: len(head)]] != head:
            raise SystemExit(f"[{arm}] the ranking changed since {d / 'ranked.json'} was made")
        _dump(d / "ranked.json", {"records": top})
    write_report(args, camp_path)
    todo = list(enumerate(_load(d / "ranked.json")["records"]))
    for i, rec in reversed(todo) if args.reverse else todo:
        path = d / "dft" / f"{rec['id']}.json"
        busy = d / "dft" / f"{rec['id']}.running"
        if path.exists() or busy.exists():
            continue
        busy.parent.mkdir(parents=True, exist_ok=True)
        busy.write_text(str(os.getpid()))
        print(f"[{arm}] DFT {i + 1}/{args.k} {rec['reduced_formula']} ({rec['id']})", flush=True)
        res = dft_one(camp, rec, d / "gpaw" / rec["id"])
        _dump(path, res)
        busy.unlink(missing_ok=True)
        print(
            f"[{arm}]   -> {res.get('verdict') or res.get('error')} "
            f"m={res.get('moment_per_fu')} {res['wall_s']:.0f} s",
            flush=True,
        )
        write_report(args, camp_path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--campaign", type=Path, default=ROOT / "campaigns" / "halfmetal_small.yaml")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--n", type=int, default=60, help="proposals per arm")
    ap.add_argument("--k", type=int, default=12, help="candidates per arm sent to GPAW")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/halfmetal_hits.json")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/halfmetal_hits_work")
    ap.add_argument("--report", action="store_true", help="only rebuild the JSON from caches")
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="DFT the ranked candidates from the last: a second process per arm, side by side",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    camp_path = args.campaign.resolve()
    args.work = args.work.resolve()
    if args.report:
        print(markdown(write_report(args, camp_path)))
        return 0
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        if arm not in ARMS:
            print(
                f"error: --arms: unknown arm {arm!r} (choose from {', '.join(ARMS)})",
                file=sys.stderr,
            )
            return 2
        run_arm(arm, args, camp_path)
    write_report(args, camp_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
