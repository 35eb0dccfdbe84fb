"""Uniqueness + novelty at campaign scale vs pymatgen's own ``StructureMatcher.group_structures``.

Proposal-like structures are generated from real perov_5 templates: each takes a random template,
substitutes A, B and X sites from element pools (so formulas recur, as in a SMOACS campaign), and
is then a near-duplicate (0.02 Å noise, permuted sites, 2x1x1 supercell, translated) or a genuinely
different variant (0.25 Å noise, A/B antisite swap). References are the real perov_5 structures of
both splits plus "known" copies of some generated structures, so novelty has matches to find.

At each size (N candidates, the first N of the 49,152; references a fixed random subset of the
9,572, N/49,152 of them), side by side in one process, same thread settings:

* **uniqueness**: ``group_structures(candidates)`` vs ``unique_and_novel(candidates)``;
* **novelty by grouping**: ``group_structures(references + candidates)`` (a candidate is novel
  when its group holds no reference) vs ``unique_and_novel(references + candidates)``;
* **the S.U.N. stage's call** ``unique_and_novel(candidates, references)`` (uniqueness and
  novelty in one pass, novelty = no reference fits); its novel flags are compared with the
  grouping's and the disagreements counted (they differ only where references match each other).

Answers (every candidate's representative) are asserted identical. Where the peer's projected
time exceeds ``--peer-budget`` s, it runs on a random sample of whole formula groups (each kept
with probability f, seeded): ``group_structures`` works group by group, so its time is a sum over
groups and t_sample / f is an unbiased estimate of the full time; answers are compared on every
sampled candidate, and ours is also timed on the same sample.

Usage: .venv/bin/python benchmarks/sun_scale.py [--sizes 3072 12288 49152] [--jobs 2]
    [--peer-budget 3600]   (writes benchmarks/results/sun_scale.json after every size)
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from _common import cpu_seconds, machine, write_result
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.matching import make_matcher, unique_and_novel, warm_kernels

ROOT = Path(__file__).resolve().parents[1]

# element pools: big enough that formulas spread like a real campaign's, small enough that many
# candidates share a formula (the hard case for matching)
A_POOL = ["Sr", "Ba", "Ca", "K", "Na", "La", "Y", "Cs", "Rb", "Pb", "Bi", "Ce"]
B_POOL = [
    "Ti",
    "Zr",
    "Nb",
    "Ta",
    "Fe",
    "Mn",
    "Co",
    "Ni",
    "V",
    "Cr",
    "Sn",
    "Hf",
    "Mo",
    "W",
    "Ga",
    "Al",
]
X_POOL = ["O", "O", "O", "F", "N", "S"]


def load_perov() -> list[Structure]:
    """All perov_5 structures (val + test)."""
    csv.field_size_limit(10**7)
    out = []
    for split in ("val", "test"):
        with open(ROOT / ".." / "shared" / "data" / "perov_5" / f"{split}.csv", newline="") as fh:
            out.extend(Structure.from_str(r["cif"], fmt="cif") for r in csv.DictReader(fh))
    return out


def _roles(s: Structure) -> tuple[int, int, list[int]]:
    """Indices of the A site, the B site and the X sites of a 5-atom perovskite cell.

    A (12-fold, cuboctahedral) has the longest nearest-neighbour distance (a/√2); B is the
    remaining site farthest from A (a√3/2, vs a/√2 for the X sites); the other three are X.
    """
    d = s.distance_matrix.copy()
    np.fill_diagonal(d, np.inf)
    a = int(np.argmax(d.min(axis=1)))
    rest = [i for i in range(len(s)) if i != a]
    b = max(rest, key=lambda i: d[a, i])
    return a, b, [i for i in rest if i != b]


def generate(templates: list[Structure], n: int, seed: int = 0) -> list[Structure]:
    """``n`` proposal-like structures from templates (see module docstring); the same ones for
    the same seed (pymatgen's ``perturb`` is seeded from ``rng`` too)."""
    rng = np.random.default_rng(seed)
    roles = [_roles(t) for t in templates]
    out = []
    for _ in range(n):
        k = rng.integers(len(templates))
        t, (a, b, xs) = templates[k], roles[k]
        species = [None] * len(t)
        species[a] = A_POOL[rng.integers(len(A_POOL))]
        species[b] = B_POOL[rng.integers(len(B_POOL))]
        x1 = X_POOL[rng.integers(len(X_POOL))]
        for j, xi in enumerate(xs):
            species[xi] = x1 if j < 2 or rng.random() < 0.7 else X_POOL[rng.integers(len(X_POOL))]
        lat = Lattice(t.lattice.matrix * rng.uniform(0.97, 1.03))
        s = Structure(lat, species, t.frac_coords)
        kind = rng.random()
        if kind < 0.35:
            s.perturb(0.02, seed=int(rng.integers(2**31)))
        elif kind < 0.45:
            s = Structure.from_sites([s[i] for i in rng.permutation(len(s))])
        elif kind < 0.55:
            s.make_supercell([2, 1, 1])
            s.perturb(0.02, seed=int(rng.integers(2**31)))
        elif kind < 0.65:
            s.translate_sites(list(range(len(s))), rng.random(3))
        elif kind < 0.85:
            s.perturb(0.25, seed=int(rng.integers(2**31)))
        else:
            s.replace(a, species[b])
            s.replace(b, species[a])
            s.perturb(0.02, seed=int(rng.integers(2**31)))
        out.append(s)
    return out


def references_subset(refs: list[Structure], n_cands: int, n_full: int) -> list[Structure]:
    """A fixed random subset of the references, n_cands / n_full of them, in reference order."""
    k = round(len(refs) * n_cands / n_full)
    keep = np.sort(np.random.default_rng(5).permutation(len(refs))[:k])
    return [refs[i] for i in keep]


def peer_representatives(structs: list[Structure]) -> tuple[list[int], float, float]:
    """Representative per structure from ``StructureMatcher.group_structures``; wall, cpu."""
    t, c = time.perf_counter(), cpu_seconds()
    groups = make_matcher().group_structures(structs)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    pos = {id(s): i for i, s in enumerate(structs)}
    rep = [-1] * len(structs)
    for g in groups:
        first = pos[id(g[0])]  # group_structures puts the group's representative first
        for s in g:
            rep[pos[id(s)]] = first
    return rep, wall, cpu


def ours(structs, refs=None, jobs=2):
    """``unique_and_novel`` with wall and CPU time (children included)."""
    t, c = time.perf_counter(), cpu_seconds()
    res = unique_and_novel(structs, refs, n_jobs=jobs)
    return res, time.perf_counter() - t, cpu_seconds() - c


def sample_groups(structs: list[Structure], f: float, seed: int) -> list[int]:
    """Indices of the structures whose reduced formula is kept (each formula with probability f)."""
    formulas = [s.composition.reduced_formula for s in structs]
    rng = np.random.default_rng(seed)
    keep = {x: rng.random() < f for x in sorted(set(formulas))}
    return [i for i, x in enumerate(formulas) if keep[x]]


def compare_task(name, structs, jobs, budget, projected, seed, n_refs=0, fraction=None):
    """One task (grouping of ``structs``): ours on all, the peer on all or a group sample
    (``fraction`` of the formula groups if given, else from the budget and projection)."""
    res, w_ours, c_ours = ours(structs, None, jobs)
    out = {"n_structures": len(structs), "ours_wall_s": w_ours, "ours_cpu_s": c_ours}
    out["ours_fit_calls"] = res.n_fit_calls
    f = 1.0 if projected is None or projected <= budget else budget / projected
    if fraction is not None:
        f = fraction
    idx = list(range(len(structs))) if f >= 1 else sample_groups(structs, f, seed)
    sub = [structs[i] for i in idx]
    rep, w_peer, c_peer = peer_representatives(sub)
    back = {i: j for j, i in enumerate(idx)}
    want = [back[res.representative[i]] for i in idx]  # ours, renumbered inside the sample
    same = want == rep
    out.update(
        peer_fraction=f,
        peer_sampled_structures=len(sub),
        peer_wall_s=w_peer / f,
        peer_cpu_s=c_peer / f,
        peer_measured_wall_s=w_peer,
        identical=same,
        unique=sum(r == i for i, r in enumerate(res.representative[n_refs:], start=n_refs)),
    )
    if f < 1:  # ours on the very same sample, for a directly measured ratio
        _, w_s, c_s = ours(sub, None, jobs)
        out.update(ours_sample_wall_s=w_s, ours_sample_cpu_s=c_s)
        out["ratio_on_sample_wall"] = w_peer / w_s
    out["ratio_wall"] = out["peer_wall_s"] / w_ours
    out["ratio_cpu"] = out["peer_cpu_s"] / c_ours
    print(
        f"  {name}: ours {w_ours:.1f} s wall / {c_ours:.1f} s cpu; group_structures "
        f"{out['peer_wall_s']:.1f} s wall{f' (estimated, f={f:.3f})' if f < 1 else ''}; "
        f"ratio {out['ratio_wall']:.1f}x wall, {out['ratio_cpu']:.1f}x cpu; identical {same}",
        flush=True,
    )
    if not same:
        raise SystemExit(f"{name}: answers differ from group_structures")
    return out, res


def projected(prev: dict | None, task: str, n_struct: int) -> float | None:
    """The peer's time at ``n_struct`` structures from the previous size, scaled by n^1.5
    (it grows faster than linearly: more structures per formula group); None at the first."""
    if prev is None:
        return None  # the smallest size always runs in full
    p = prev[task]
    return p["peer_wall_s"] * (n_struct / p["n_structures"]) ** 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3072, 12288, 49152])
    ap.add_argument("--full", type=int, default=49152, help="candidates generated")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--templates", type=int, default=64)
    ap.add_argument("--known", type=int, default=2000, help="generated 'known' references")
    ap.add_argument("--peer-budget", type=float, default=3600, help="s per peer task and size")
    ap.add_argument("--name", default="sun_scale", help="results/NAME.json")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["uniqueness", "novelty", "sun"],
        choices=["uniqueness", "novelty", "sun"],
        help="in this order; the JSON is rewritten after each",
    )
    ap.add_argument(
        "--peer-fraction",
        type=float,
        default=None,
        help="sample this fraction of formula groups for the peer at every size "
        "(default: from --peer-budget and the previous size)",
    )
    args = ap.parse_args()

    t = time.perf_counter()
    perov = load_perov()
    templates = perov[: args.templates]
    all_cands = generate(templates, args.full, seed=0)
    all_refs = perov + generate(templates, args.known, seed=1)
    print(
        f"generated {len(all_cands)} candidates, {len(all_refs)} references "
        f"in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    result = {"machine": machine(), "jobs": args.jobs, "peer_budget_s": args.peer_budget}
    # numba kernels: compiled on first use after an install (then loaded from numba's cache);
    # timed here so the rows below are steady-state and the one-off cost is on record
    t = time.perf_counter()
    warm_kernels()
    result["kernel_warmup_s"] = time.perf_counter() - t
    print(f"kernels ready in {result['kernel_warmup_s']:.1f} s", flush=True)
    result["sizes"] = []
    prev = None
    for n in args.sizes:
        cands = all_cands[:n]
        refs = references_subset(all_refs, n, args.full)
        load0 = list(os.getloadavg())
        print(f"size {n} x {len(refs)} (load {load0[0]:.1f})", flush=True)
        row = {"n_candidates": n, "n_references": len(refs), "loadavg_before": load0}
        row["n_formulas"] = len({c.composition.reduced_formula for c in cands})

        result["sizes"].append(row)
        res_u = res_n = None
        uniq = nov = None
        for task in args.tasks:
            if task == "uniqueness":
                p_u = projected(prev, "uniqueness", n)
                uniq, res_u = compare_task(
                    "uniqueness", cands, args.jobs, args.peer_budget, p_u, 11, 0, args.peer_fraction
                )
                row["uniqueness"] = uniq
            elif task == "novelty":
                union = refs + cands
                p_n = projected(prev, "novelty_grouping", len(union))
                nov, res_n = compare_task(
                    "novelty (grouping)",
                    union,
                    args.jobs,
                    args.peer_budget,
                    p_n,
                    12,
                    len(refs),
                    args.peer_fraction,
                )
                nov["novel"] = sum(r >= len(refs) for r in res_n.representative[len(refs) :])
                row["novelty_grouping"] = nov
            elif task == "sun":
                sun, w, c = ours(cands, refs, args.jobs)
                row["sun_stage_call"] = sun_row = {
                    "ours_wall_s": w,
                    "ours_cpu_s": c,
                    "fit_calls": sun.n_fit_calls,
                    "unique": sum(sun.unique),
                    "novel": sum(sun.novel),
                    "unique_and_novel": sum(u and v for u, v in zip(sun.unique, sun.novel)),
                }
                if res_u is not None:
                    sun_row["uniqueness_identical_to_group_structures"] = (
                        sun.representative == res_u.representative
                    )
                if res_n is not None:
                    sun_row["novel_flags_differing_from_grouping"] = sum(
                        a != (res_n.representative[len(refs) + i] >= len(refs))
                        for i, a in enumerate(sun.novel)
                    )
                print(f"  S.U.N. stage call: {w:.1f} s wall / {c:.1f} s cpu; {sun_row}")
            row["loadavg_after"] = list(os.getloadavg())
            print(f"  wrote {write_result(args.name, result)}", flush=True)
        prev = {"uniqueness": uniq, "novelty_grouping": nov} if uniq and nov else None


if __name__ == "__main__":
    main()
