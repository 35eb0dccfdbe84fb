"""Batched vs per-structure MLIP relaxation: throughput ratio and energy agreement.

Relaxes the same real perov_5 structures (cell + positions, FIRE, FrechetCellFilter) three ways,
side by side in one run:

* ``batched``   – smoacs_flows.screening.relax.relax_batched (one CHGNet call per step for all
  active structures);
* ``atomate2``  – atomate2's ForceFieldRelaxMaker, one jobflow job per structure (run_locally);
* ``ase``       – plain ASE + CHGNetCalculator one structure at a time (no jobflow), to show how
  much of the difference is batching rather than workflow overhead.

Usage: .venv/bin/python benchmarks/relax_batch.py [--n 16] [--fmax 0.01] [--steps 300]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smoacs_flows.screening.relax import relax_atomate2, relax_batched  # noqa: E402


def perov(n: int, seed: int = 0) -> list[Structure]:
    """``n`` real perov_5 structures (val split), lightly rattled and strained (work to do)."""
    csv.field_size_limit(10**7)
    with open(ROOT / ".." / "shared" / "data" / "perov_5" / "val.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(rows), n, replace=False)
    out = []
    for i in idx:
        s = Structure.from_str(rows[i]["cif"], fmt="cif")
        s.perturb(0.02)
        s.apply_strain(rng.uniform(-0.02, 0.02))
        out.append(s)
    return out


def relax_ase(structures, fmax, steps):
    """Per-structure ASE relaxation with the same optimiser, filter and CHGNet."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = CHGNetCalculator(CHGNet.load(verbose=False))
    out = []
    for s in structures:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        conv = opt.run(fmax=fmax, steps=steps)
        out.append((atoms.get_potential_energy() / len(atoms), bool(conv), opt.nsteps))
    return out


def eval_only(structs, repeats: int) -> None:
    """One relaxation step's MLIP work: one batched call vs one call per structure."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from smoacs_flows.screening.relax import CHGNetEvaluator

    ev = CHGNetEvaluator()
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structs]
    ev.evaluate(atoms[:2])  # warm up
    tb = cb = ts = cs = 0.0
    diff = 0.0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        batched = ev.evaluate(atoms)
        tb, cb = tb + time.perf_counter() - t, cb + time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        single = [ev.evaluate([a])[0] for a in atoms]
        ts, cs = ts + time.perf_counter() - t, cs + time.process_time() - c
        for a, x, y in zip(atoms, batched, single):
            diff = max(diff, abs(x[0] - y[0]) / len(a))
    print(
        f"one step for {len(atoms)} structures, {repeats} repeats interleaved: batched "
        f"{tb:.2f} s wall / {cb:.2f} s CPU, per-structure {ts:.2f} s wall / {cs:.2f} s CPU; "
        f"ratio {ts / tb:.2f}x wall, {cs / cb:.2f}x CPU; max |dE| {1000 * diff:.4f} meV/atom"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--fmax", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--skip-atomate2", action="store_true")
    ap.add_argument(
        "--eval-only",
        type=int,
        default=0,
        metavar="REPEATS",
        help="only compare one batched CHGNet call with per-structure calls (the "
        "work of one relaxation step), REPEATS times interleaved",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    structs = perov(args.n)
    if args.eval_only:
        eval_only(structs, args.eval_only)
        return
    print(
        f"{args.n} perov_5 structures, CHGNet, FIRE + FrechetCellFilter, fmax={args.fmax}, "
        f"steps≤{args.steps}, torch threads={torch.get_num_threads()}"
    )
    relax_batched(structs[:1], "chgnet", fmax=0.5, steps=1)  # load weights, warm up

    t, c = time.perf_counter(), time.process_time()
    b = relax_batched(structs, "chgnet", fmax=args.fmax, steps=args.steps)
    t_b, c_b = time.perf_counter() - t, time.process_time() - c
    print(f"batched done: wall {t_b:.1f} s, cpu {c_b:.1f} s", flush=True)

    t, c = time.perf_counter(), time.process_time()
    a = relax_ase(structs, args.fmax, args.steps)
    t_ase, c_ase = time.perf_counter() - t, time.process_time() - c
    print(f"ase done: wall {t_ase:.1f} s, cpu {c_ase:.1f} s", flush=True)

    t_a2 = None
    if not args.skip_atomate2:
        t, c = time.perf_counter(), time.process_time()
        a2 = relax_atomate2(structs, "chgnet", fmax=args.fmax, steps=args.steps)
        t_a2, c_a2 = time.perf_counter() - t, time.process_time() - c

    eb = np.array([r.energy_per_atom for r in b])
    e_ase = np.array([x[0] for x in a])
    print(
        f"converged: batched {sum(r.converged for r in b)}/{args.n}, "
        f"ase {sum(x[1] for x in a)}/{args.n}; steps batched {sum(r.steps for r in b)}, "
        f"ase {sum(x[2] for x in a)}"
    )
    print("(CPU = process time of all threads: robust to other load on the machine)")
    print(
        f"{'path':<10} {'wall s':>8} {'cpu s':>8} {'struct/cpu-s':>12} "
        f"{'speed-up wall':>13} {'speed-up cpu':>12}"
    )
    print(f"{'batched':<10} {t_b:8.1f} {c_b:8.1f} {args.n / c_b:12.3f} {1.0:13.2f} {1.0:12.2f}")
    print(
        f"{'ase':<10} {t_ase:8.1f} {c_ase:8.1f} {args.n / c_ase:12.3f} {t_ase / t_b:13.2f} "
        f"{c_ase / c_b:12.2f}"
    )
    print(f"max |E_batched - E_ase| = {1000 * np.max(np.abs(eb - e_ase)):.3f} meV/atom")
    if t_a2 is not None:
        ea2 = np.array([r.energy_per_atom if r.ok else np.nan for r in a2])
        print(
            f"{'atomate2':<10} {t_a2:8.1f} {c_a2:8.1f} {args.n / c_a2:12.3f} "
            f"{t_a2 / t_b:13.2f} {c_a2 / c_b:12.2f}"
        )
        print(
            f"max |E_batched - E_atomate2| = {1000 * np.nanmax(np.abs(eb - ea2)):.3f} meV/atom"
            f" (atomate2 converged {sum(r.converged for r in a2)}/{args.n})"
        )


if __name__ == "__main__":
    main()
