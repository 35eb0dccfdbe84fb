"""What the GPU rows ran with: torch/CUDA/GPU, the carried packages, vesin-torch on the device.

Usage: python3 benchmarks/device/env_check.py OUT.json   (prints the same facts)
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
from importlib import metadata

#: module to import -> its distribution (for the version)
PACKAGES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pymatgen.core": "pymatgen-core",
    "ase": "ase",
    "chgnet": "chgnet",
    "torch_sim": "torch-sim-atomistic",
    "vesin.torch": "vesin-torch",
    "tables": "tables",
    "pydantic": "pydantic",
}


def check() -> dict:
    """Versions and GPU facts; each failing check is recorded as its error line, not raised."""
    import torch

    info: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "packages": {},
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": [p.major, p.minor],
            "multiprocessors": p.multi_processor_count,
        }
    for mod, dist in PACKAGES.items():
        try:
            importlib.import_module(mod)
            info["packages"][dist] = metadata.version(dist)
        except Exception as exc:  # noqa: BLE001 - reported, the rows decide
            info["packages"][dist] = f"error: {type(exc).__name__}: {exc}"
    try:
        from chgnet.graph.cygraph import make_graph  # noqa: F401 - the compiled extension

        info["chgnet_cygraph"] = True
    except Exception as exc:  # noqa: BLE001
        info["chgnet_cygraph"] = f"error: {exc}"
    # vesin-torch's compiled op with this torch, on the GPU when there is one
    try:
        from vesin.torch import NeighborList

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        gen = torch.Generator().manual_seed(0)
        pts = (torch.rand(64, 3, generator=gen, dtype=torch.float64) * 8).to(dev)
        box = (torch.eye(3, dtype=torch.float64) * 8).to(dev)
        i, _, _, d = NeighborList(cutoff=3.0, full_list=False).compute(
            points=pts, box=box, periodic=True, quantities="ijSd"
        )
        info["vesin_torch_nl"] = {"device": str(i.device), "pairs": len(i), "dmax": float(d.max())}
    except Exception as exc:  # noqa: BLE001
        info["vesin_torch_nl"] = f"error: {type(exc).__name__}: {exc}"
    return info


if __name__ == "__main__":
    facts = check()
    text = json.dumps(facts, indent=1)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            fh.write(text + "\n")
