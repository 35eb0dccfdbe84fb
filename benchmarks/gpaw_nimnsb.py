"""Benchmark: GPAW wall time for half-Heusler NiMnSb at the test settings (GPAWSettings()).

Run: ``.venv/bin/python benchmarks/gpaw_nimnsb.py [--json]``. Prints the SCF, non-SCF and total
wall times with the moment and verdict, so a slow machine and a wrong answer are both visible.
Nothing is cached: every run computes from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smoacs_flows.dft.gpaw_engine import GPAWSettings, run_gpaw  # noqa: E402
from tests.dft.gpaw_structures import nimnsb  # noqa: E402


def main() -> int:
    """Run NiMnSb once and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = GPAWSettings()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_gpaw(nimnsb(), settings, work_dir=tmp)
        wall = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = {
        "system": "NiMnSb (C1b, a=5.90 Å, primitive, 3 atoms)",
        "settings": {
            k: result.settings[k]
            for k in (
                "ecut",
                "kpoint_density",
                "dense_kpoint_density",
                "scf_kpts",
                "nscf_kpts",
                "nscf_ibz_kpoints",
                "smearing",
            )
        },
        "wall_s": round(wall, 1),
        "scf_s": round(result.timings.get("scf", float("nan")), 1),
        "nscf_s": round(result.timings.get("nscf", float("nan")), 1),
        "moment_per_fu": round(result.moment_per_fu, 3),
        "verdict": result.analysis.verdict,
        "minority_gap_eV": result.analysis.gaps["down"].gap,
        "half_metallic_gap_eV": result.analysis.half_metallic_gap,
        "cpus": os.cpu_count(),
        "load_avg_1min_after": load,
        "machine": platform.machine(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
