"""The per-structure reduction of uniqueness/novelty against pymatgen, exhaustively, and its CPU.

Exactness (``np.array_equal``, never allclose):

* lattices: ``matching.reduce.niggli_reduced_lattice`` vs ``Lattice.get_niggli_reduced_lattice``
  for every perov_5 cell (val + test), every generated candidate and "known" reference of
  ``sun_scale.generate`` (0.02 / 0.25 Å noise, supercells, antisite swaps), and per generated
  structure a skewed basis of the same lattice (random unimodular matrix) and an F-ordered copy;
* structures: ``Prepared.reduce`` (its reduced lattice, fractional coordinates and species) vs
  ``StructureMatcher._get_reduced_structure`` (Niggli + primitive cell) for all of them, and
  3,000 generated crystals rewritten in a skewed basis.

Timing: ``prepare`` and ``Prepared.reduce`` over the first ``--n`` candidates in one process
(``time.process_time``), split into gcd-1 cells and supercells (species counts with gcd > 1);
the first call (numba's cache load, or its compile on a fresh checkout) is timed apart.

Usage: .venv/bin/python benchmarks/reduce_exact.py [--n 12288] [--skip-check]
    (writes benchmarks/results/reduce_exact.json)
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter

import numpy as np
from _common import machine, write_result
from pymatgen.core import Lattice, Structure
from sun_scale import generate, load_perov

from smoacs_flows.screening.matching.niggli import LLL_AMBIGUOUS, OK, scale_of
from smoacs_flows.screening.matching.reduce import make_matcher, niggli_reduced_lattice, prepare
from tests.screening._data import unimodular  # the test suite's skewed bases


def check_lattices(lattices: list[Lattice]) -> dict:
    """Compare every lattice's reduction with pymatgen's; count how each was decided."""
    diff = 0
    how: Counter = Counter()
    for lat in lattices:
        status = scale_of(lat.matrix)[0]
        if status == LLL_AMBIGUOUS:
            status = scale_of(lat.matrix, lat.lll_matrix)[0]
            how["pymatgen LLL, rest replayed"] += 1
        how["replayed" if status == OK else "pymatgen fallback"] += 1
        want = lat.get_niggli_reduced_lattice().matrix
        diff += not np.array_equal(niggli_reduced_lattice(lat).matrix, want)
    return {"n": len(lattices), "differences": diff, "decided": dict(how)}


def check_structures(structures: list[Structure]) -> dict:
    """Compare every structure's cached reduction with ``_get_reduced_structure``."""
    sm = make_matcher()
    diff = 0
    for s in structures:
        p = prepare(s, sm)
        sm._get_reduced_istructure.cache_clear()  # pymatgen's lru_cache: no shared answers
        p.reduce(sm)
        sm._get_reduced_istructure.cache_clear()
        want = sm._get_reduced_structure(Structure.from_sites(s), True, niggli=True)
        got = p.reduced
        same = (
            np.array_equal(got.lattice.matrix, want.lattice.matrix)
            and np.array_equal(got.frac_coords, want.frac_coords)
            and [x.species for x in got] == [x.species for x in want]
        )
        diff += not same
    return {"n": len(structures), "differences": diff}


def _gcd(s: Structure) -> int:
    return math.gcd(*Counter(site.species_string for site in s).values())


def time_reduce(cands: list[Structure]) -> dict:
    """CPU of prepare and reduce over ``cands`` (one process), by kind of cell."""
    sm = make_matcher()
    t = time.process_time()
    first = prepare(cands[0], sm)
    first.reduce(sm)
    out = {"first_call_s": time.process_time() - t, "loadavg_before": list(os.getloadavg())}
    t = time.process_time()
    prepared = [prepare(s, sm) for s in cands[1:]]
    out["prepare_s"] = time.process_time() - t
    kinds = {"gcd1": [], "supercell": []}
    for p in prepared:
        kinds["gcd1" if _gcd(p.structure) == 1 else "supercell"].append(p)
    total = 0.0
    for name, group in kinds.items():
        t = time.process_time()
        for p in group:
            p.reduce(sm)
        dt = time.process_time() - t
        total += dt
        out[name] = {"n": len(group), "reduce_s": dt, "us_per_structure": dt / len(group) * 1e6}
    out["reduce_s"] = total
    out["reduce_us_per_structure"] = total / len(prepared) * 1e6
    out["prepare_us_per_structure"] = out["prepare_s"] / len(prepared) * 1e6
    out["loadavg_after"] = list(os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12288, help="generated candidates")
    ap.add_argument("--skip-check", action="store_true", help="timing only")
    args = ap.parse_args()
    perov = load_perov()
    cands = generate(perov[:64], args.n, seed=0)
    result = {"machine": machine(), "n_candidates": args.n}
    result["timing"] = time_reduce(cands)
    print(f"timing: {result['timing']}", flush=True)
    if not args.skip_check:
        known = generate(perov[:64], 2000, seed=1)
        rng = np.random.default_rng(2)
        lattices = [s.lattice for s in perov + cands + known]
        lattices += [Lattice(unimodular(rng) @ s.lattice.matrix) for s in cands + known]
        lattices += [Lattice(np.asfortranarray(s.lattice.matrix)) for s in cands + known]
        result["lattices"] = check_lattices(lattices)
        print(f"lattices: {result['lattices']}", flush=True)
        skewed = []  # the same crystals in skewed bases
        for s in cands[:3000]:
            u = unimodular(rng)
            frac = s.frac_coords @ np.linalg.inv(u)
            skewed.append(Structure(Lattice(u @ s.lattice.matrix), s.species, frac))
        result["structures"] = check_structures(perov + cands + known + skewed)
        print(f"structures: {result['structures']}", flush=True)
    print(f"wrote {write_result('reduce_exact', result)}")


if __name__ == "__main__":
    main()
