"""GPAW candidates per hour on one cpu "node": one at a time (today's ``singleshot`` cpu job:
GPAW with one BLAS thread, no MPI, so one core busy) against one per core side by side (what
``launchers init --cpu-multi``'s ``rlaunch multi N`` does). Same candidates, same GPAW settings
(the demo's), each answer checked (every run converges to the same total moment as the
serial one). Usage (from the repository root)::

    .venv/bin/python benchmarks/cpu_multi_gpaw.py [--n 4] [--procs 2]

Writes benchmarks/results/cpu_multi_gpaw.json.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one thread per GPAW process, as the cpu jobs run it

from _common import machine, write_result  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

SETTINGS = {  # the demo's GPAW settings (campaigns/halfmetal_small.yaml)
    "ecut": 250,
    "kpoint_density": 2.5,
    "dense_kpoint_density": 4.0,
    "scf_convergence": {"energy": 0.001, "density": 0.0003, "eigenstates": 0.00001},
}


def candidate() -> Structure:
    """Zinc-blende CrAs (a = 5.66 Å, primitive cell): a known half-metal, 3 μB."""
    s = Structure.from_spacegroup("F-43m", Lattice.cubic(5.66), ["Cr", "As"], [[0] * 3, [0.25] * 3])
    return s.get_primitive_structure()


def one(i: int) -> tuple[int, float, float]:
    """Run GPAW on candidate ``i``: (index, wall seconds, total moment)."""
    from smoacs_flows.dft.analysis import AnalysisSettings
    from smoacs_flows.dft.gpaw_engine import GPAWSettings, run_gpaw

    t0 = time.perf_counter()
    res = run_gpaw(candidate(), GPAWSettings(**SETTINGS), AnalysisSettings())
    return i, time.perf_counter() - t0, float(res.total_moment)


def main() -> None:
    """Serial, then side by side; write and print the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="candidates")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2, help="cores of the node")
    args = ap.parse_args()
    out = {"machine": machine(1), "n": args.n, "procs": args.procs, "settings": SETTINGS}
    t0 = time.perf_counter()
    serial = [one(i) for i in range(args.n)]
    out["serial_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.procs) as pool:
        side = list(pool.map(one, range(args.n)))
    out["multi_s"] = time.perf_counter() - t0
    moments = {round(m, 2) for _, _, m in serial + side}
    out["moments"] = sorted(moments)
    out["answers_agree"] = len(moments) == 1
    out["per_candidate_serial_s"] = [round(t, 1) for _, t, _ in serial]
    out["per_candidate_multi_s"] = [round(t, 1) for _, t, _ in side]
    out["candidates_per_hour"] = {
        "singleshot (one core busy)": 3600 * args.n / out["serial_s"],
        f"multi {args.procs} (every core busy)": 3600 * args.n / out["multi_s"],
    }
    out["speedup"] = out["serial_s"] / out["multi_s"]
    path = write_result("cpu_multi_gpaw", out)
    print(out["candidates_per_hour"], f"speedup {out['speedup']:.2f}", out["moments"], path)


if __name__ == "__main__":
    main()
