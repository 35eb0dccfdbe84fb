"""Uniqueness + novelty at campaign scale (49,152 proposal-like structures) vs naive matching.

Proposal-like structures are generated from real perov_5 templates: each takes a random template,
substitutes A, B and X sites from element pools (so formulas recur, as in a SMOACS campaign), and
is then a near-duplicate (0.02 Å noise, permuted sites, 2x1x1 supercell, translated) or a genuinely
different variant (0.25 Å noise, A/B antisite swap). References are the real perov_5 structures of
both splits plus "known" copies of some generated structures, so novelty has matches to find.

Runs, side by side in one process:
1. fast ``unique_and_novel`` on all N candidates (wall time, processes = --jobs);
2. naive pairwise StructureMatcher.fit and the fast path on the same subsample (--naive-n
   candidates, --naive-refs references), checking that the answers are identical.

Usage: .venv/bin/python benchmarks/sun_scale.py [--n 49152] [--jobs 2] [--naive-n 400]
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smoacs_flows.screening.matching import naive_unique_and_novel, unique_and_novel  # noqa: E402

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
    """``n`` proposal-like structures from templates (see module docstring)."""
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
            s.perturb(0.02)
        elif kind < 0.45:
            s = Structure.from_sites([s[i] for i in rng.permutation(len(s))])
        elif kind < 0.55:
            s.make_supercell([2, 1, 1])
            s.perturb(0.02)
        elif kind < 0.65:
            s.translate_sites(list(range(len(s))), rng.random(3))
        elif kind < 0.85:
            s.perturb(0.25)
        else:
            s.replace(a, species[b])
            s.replace(b, species[a])
            s.perturb(0.02)
        out.append(s)
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its (finished) children, all threads."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=49152)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--templates", type=int, default=64)
    ap.add_argument("--known", type=int, default=2000, help="generated 'known' references")
    ap.add_argument("--naive-n", type=int, default=400)
    ap.add_argument("--naive-refs", type=int, default=600)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()

    t = time.perf_counter()
    perov = load_perov()
    templates = perov[: args.templates]
    cands = generate(templates, args.n, seed=0)
    refs = perov + generate(templates, args.known, seed=1)
    n_formulas = len({c.composition.reduced_formula for c in cands})
    print(
        f"generated {len(cands)} candidates ({n_formulas} formulas), {len(refs)} references "
        f"in {time.perf_counter() - t:.1f} s",
        flush=True,
    )

    rng = np.random.default_rng(2)
    sub = [cands[i] for i in sorted(rng.choice(len(cands), args.naive_n, replace=False))]
    sub_refs = [refs[i] for i in sorted(rng.choice(len(refs), args.naive_refs, replace=False))]
    # make sure the subsample has duplicates and reference hits to find
    sub += [s.copy() for s in sub[: args.naive_n // 10]]
    sub_refs += [s.copy() for s in sub[args.naive_n // 10 : args.naive_n // 5]]
    t, c = time.perf_counter(), cpu_seconds()
    fast = unique_and_novel(sub, sub_refs, n_jobs=1)
    t_fast, c_fast = time.perf_counter() - t, cpu_seconds() - c
    t, c = time.perf_counter(), cpu_seconds()
    naive = naive_unique_and_novel(sub, sub_refs)
    t_naive, c_naive = time.perf_counter() - t, cpu_seconds() - c
    same = fast.representative == naive.representative and (
        fast.reference_match == naive.reference_match
    )
    print(
        f"SUBSAMPLE n={len(sub)} refs={len(sub_refs)}: naive wall {t_naive:.1f} s / cpu "
        f"{c_naive:.1f} s ({naive.n_fit_calls} fit calls), fast (1 process) wall {t_fast:.2f} s"
        f" / cpu {c_fast:.2f} s ({fast.n_fit_calls} fit calls): ratio wall "
        f"{t_naive / t_fast:.1f}x, cpu {c_naive / c_fast:.1f}x; identical answers: "
        f"{same}; unique {sum(fast.unique)}, novel {sum(fast.novel)}"
    )
    if not same:
        raise SystemExit("fast and naive answers differ")

    if not args.skip_full:
        t, c = time.perf_counter(), cpu_seconds()
        done = [0, 0]

        def progress(k: int) -> None:
            done[0] += k
            if done[0] >= done[1]:
                print(
                    f"  ... {done[0]}/{len(cands)} after {time.perf_counter() - t:.0f} s wall, "
                    f"{cpu_seconds() - c:.0f} s cpu (finished workers)",
                    flush=True,
                )
                done[1] += len(cands) // 10

        res = unique_and_novel(cands, refs, n_jobs=args.jobs, progress=progress)
        t_full, c_full = time.perf_counter() - t, cpu_seconds() - c
        print(
            f"FULL  N={len(cands)} refs={len(refs)} jobs={args.jobs}: wall {t_full:.1f} s, "
            f"cpu {c_full:.1f} s (all processes), "
            f"unique {sum(res.unique)}, novel {sum(res.novel)}, unique&novel "
            f"{sum(u and v for u, v in zip(res.unique, res.novel))}, "
            f"fit calls {res.n_fit_calls}",
            flush=True,
        )


if __name__ == "__main__":
    main()
