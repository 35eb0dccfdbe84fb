"""Batched MLIP relaxation: ours vs torch-sim vs atomate2 vs plain ASE, energies compared.

Relaxes the same structures (real perov_5 cells and 2x1x1 / 2x2x1 / 2x2x2 supercells of them,
rattled and strained: mixed sizes of 5-40 atoms) with the same MLIP (CHGNet, weights shipped
with the wheel), the same fmax and step cap, cell + positions, four ways side by side in one run
with the same torch thread setting:

* ``ours``      – smoacs_flows.screening.relax.relax_batched: one ASE FIRE + FrechetCellFilter
  per structure, driven in lockstep, one batched CHGNet call per step;
* ``torch-sim`` – the product's default engine,
  ``smoacs_flows.screening.relax_torchsim.relax_torchsim``: torch-sim's batched FIRE with
  Frechet cell parameterisation (``ts.optimize(..., optimizer=ts.frechet_cell_fire)``,
  in-flight batching), convergence of atoms and cell at fmax checked every step, the failure
  guards, CHGNet wrapped as a torch-sim ``ModelInterface`` (``torchsim_model``) through the
  same batched CHGNet call (torch-sim ships no CHGNet model). Its fallback to ``ours`` is
  refused, so the row always times torch-sim. As in the product, torch-sim's state stays on
  the CPU whatever ``--device`` (CHGNet itself runs on ``--device``);
* ``atomate2``  – atomate2's ForceFieldRelaxMaker, one jobflow job per structure (run_locally);
* ``ase``       – plain ASE + CHGNetCalculator, one structure at a time.

Energies per atom of each path are compared with ours structure by structure.

``--device cuda`` puts CHGNet (and torch-sim's state) on the GPU for every path; ``--data`` reads
the perov_5 CSV from elsewhere (the GPU machine has no ``../shared``).

Usage: .venv/bin/python benchmarks/relax_batch.py [--n 64] [--fmax 0.05] [--steps 150]
    [--threads 1] [--only ours,torchsim,ase,atomate2] [--device auto|cpu|cuda] [--data CSV]
    (writes benchmarks/results/relax_batch.json)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from _common import ROOT, machine, write_result
from pymatgen.core import Structure

from smoacs_flows.errors import InputError
from smoacs_flows.screening.relax import (
    CHGNetEvaluator,
    relax_atomate2,
    relax_batched,
    resolve_device,
)

#: supercells cycled over the structures: 3 unit cells, 2 of 10, 2 of 20, 1 of 40 atoms
SUPERCELLS = [
    (1, 1, 1),
    (2, 1, 1),
    (1, 1, 1),
    (2, 2, 1),
    (1, 1, 1),
    (2, 1, 1),
    (2, 2, 1),
    (2, 2, 2),
]


#: the relaxation paths, in the order they run
PATHS = ("ours", "torchsim", "ase", "atomate2")

#: --small: 3 unit cells, 1 of 10 atoms
SMALL = [(1, 1, 1), (1, 1, 1), (1, 1, 1), (2, 1, 1)]


#: the perov_5 validation split (shared data beside the project root)
DATA = ROOT / ".." / "shared" / "data" / "perov_5" / "val.csv"


def structures(n: int, seed: int = 0, cycle=SUPERCELLS, data: Path = DATA) -> list[Structure]:
    """``n`` real perov_5 structures (val split) of mixed sizes, rattled and strained."""
    csv.field_size_limit(10**7)
    with open(data, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    out = []
    for k, i in enumerate(rng.choice(len(rows), n, replace=False)):
        s = Structure.from_str(rows[i]["cif"], fmt="cif")
        s.make_supercell(cycle[k % len(cycle)])
        s.perturb(0.05)
        s.apply_strain(rng.uniform(-0.03, 0.03))
        out.append(s)
    return out


def relax_ase(structs, fmax, steps, device="cpu"):
    """Per-structure ASE relaxation with the same optimiser, filter and CHGNet."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = CHGNetCalculator(CHGNet.load(verbose=False, use_device=device), use_device=device)
    out = []
    for s in structs:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        conv = opt.run(fmax=fmax, steps=steps)
        out.append((atoms.get_potential_energy() / len(atoms), bool(conv), opt.nsteps))
    return out


def relax_torchsim_engine(structs, evaluator, fmax, steps):
    """The product's torch-sim engine (``relax_torchsim.relax_torchsim``: every-step
    convergence and failure guards); energies per atom (NaN for a failed structure),
    converged flags. Its silent fallback to ``relax_batched`` is refused here, so this row
    always times torch-sim."""
    from smoacs_flows.screening import relax_torchsim as engine

    def no_fallback(*a, **k):
        raise RuntimeError("torch-sim raised; the engine fell back to relax_batched")

    real, engine.relax_batched = engine.relax_batched, no_fallback
    try:
        res = engine.relax_torchsim(structs, evaluator, fmax=fmax, steps=steps)
    finally:
        engine.relax_batched = real
    e = [r.energy_per_atom if r.ok else float("nan") for r in res]
    return e, [r.converged for r in res]


def fail(msg: str) -> NoReturn:
    """One ``error:`` line on stderr, exit status 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def timed(fn, *a, **k):
    """(result, wall s, CPU s of this process, all threads); CUDA work is waited for."""
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    sync()
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    sync()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--only", default=",".join(PATHS))
    ap.add_argument("--small", action="store_true", help="5- and 10-atom cells only")
    ap.add_argument("--name", default="relax_batch", help="results/NAME.json")
    ap.add_argument(
        "--mlip-batch", type=int, default=8, help="structures per CHGNet forward (memory)"
    )
    ap.add_argument("--device", default="auto", help="torch device for CHGNet: auto, cpu, cuda")
    ap.add_argument("--data", type=Path, default=DATA, help="perov_5 CSV with a cif column")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    try:
        device = resolve_device(args.device)
    except InputError as exc:
        fail(str(exc))
    if not args.data.is_file():
        fail(f"--data: no such file {args.data}")
    if unknown := set(args.only.split(",")) - set(PATHS):
        fail(f"--only: unknown path(s) {', '.join(sorted(unknown))} (of {', '.join(PATHS)})")
    torch.set_num_threads(args.threads)
    structs = structures(args.n, cycle=SMALL if args.small else SUPERCELLS, data=args.data)
    sizes = [len(s) for s in structs]
    print(
        f"{args.n} structures, {sum(sizes)} atoms (sizes {sorted(set(sizes))}), CHGNet, "
        f"fmax={args.fmax}, steps<={args.steps}, torch threads={torch.get_num_threads()}, "
        f"device={device}",
        flush=True,
    )
    evaluator = CHGNetEvaluator(batch_size=args.mlip_batch, device=device)
    # warm-up outside the clocks: weights, and one evaluation of every structure (first
    # calls on new graph sizes are slower, which would favour whichever path runs second)
    relax_batched(structs, evaluator, fmax=0.5, steps=0, device=device)
    result = {
        "machine": machine(torch_threads=torch.get_num_threads()),
        "n": args.n,
        "atoms": sum(sizes),
        "sizes": sizes,
        "fmax": args.fmax,
        "steps": args.steps,
        "mlip_batch": args.mlip_batch,
        "device": device,
        "mlip": "CHGNet 0.3.0 (chgnet package default)",
        "paths": {},
    }
    energies = {}
    for path in args.only.split(","):
        load = list(os.getloadavg())
        if path == "ours":
            res, w, c = timed(
                relax_batched, structs, evaluator, fmax=args.fmax, steps=args.steps, device=device
            )
            e, conv = [r.energy_per_atom for r in res], [r.converged for r in res]
        elif path == "torchsim":
            (e, conv), w, c = timed(
                relax_torchsim_engine, structs, evaluator, args.fmax, args.steps
            )
        elif path == "ase":
            res, w, c = timed(relax_ase, structs, args.fmax, args.steps, device)
            e, conv = [x[0] for x in res], [x[1] for x in res]
        else:  # atomate2
            res, w, c = timed(
                relax_atomate2, structs, "chgnet", fmax=args.fmax, steps=args.steps, device=device
            )
            e = [r.energy_per_atom if r.ok else float("nan") for r in res]
            conv = [r.converged for r in res]
        e = [float(x) for x in e]
        energies[path] = np.array(e, float)
        row = {
            "wall_s": w,
            "cpu_s": c,
            "converged": int(sum(conv)),
            "loadavg_before": load,
            "energy_per_atom": e,
        }
        if "ours" in energies and path != "ours":
            d = np.abs(energies[path] - energies["ours"]) * 1000
            row["max_abs_dE_vs_ours_meV_per_atom"] = float(np.nanmax(d))
            row["median_abs_dE_vs_ours_meV_per_atom"] = float(np.nanmedian(d))
            row["ours_speedup_wall"] = w / result["paths"]["ours"]["wall_s"]
            row["ours_speedup_cpu"] = c / result["paths"]["ours"]["cpu_s"]
        result["paths"][path] = row
        print(
            f"{path}: wall {w:.1f} s, cpu {c:.1f} s, converged {sum(conv)}/{args.n}"
            + (
                f", max|dE| vs ours {row['max_abs_dE_vs_ours_meV_per_atom']:.2f} meV/atom, "
                f"ours faster {row['ours_speedup_wall']:.2f}x wall / "
                f"{row['ours_speedup_cpu']:.2f}x cpu"
                if "ours_speedup_wall" in row
                else ""
            ),
            flush=True,
        )
        write_result(args.name, result)


if __name__ == "__main__":
    main()
