"""How much gradient the shipped perov_5 band-gap model gives a gradient-based optimiser.

For the first N metals and the first N gapped compounds of perov_5 ``test.csv``, the
predicted gap's gradient with respect to each site's element probabilities (what SMOACS
optimises), through the model's hurdle gate: per crystal the largest |d gap / d p| over its
sites and elements. Usage (from the repository root)::

    .venv/bin/python benchmarks/gap_gradient.py [--n 32] [--model perov5-band-gap]
        [--name gap_gradient] [--gate K B] [--threads 1]

``--gate K B`` measures through the predictor spec's optimisation-only gate
``{sharpness: K, bias: B}`` instead of the model's own.

Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import ROOT, machine, write_result

from smoacs_flows.predictors.alignn import build
from smoacs_flows.predictors.alignn_training import load_dataset
from smoacs_flows.predictors.base import SoftCrystalBatch

TEST = ROOT.parent / "shared" / "data" / "perov_5" / "test.csv"


def gradients(predictor, structures: list) -> tuple[np.ndarray, np.ndarray]:
    """(predicted gaps, per-crystal max |d gap / d element probability|) for ``structures``."""
    batch = SoftCrystalBatch.from_structures(structures)
    probs = batch.element_probs.clone().requires_grad_(True)
    soft = SoftCrystalBatch(
        batch.lattice, batch.frac_coords, probs, batch.crystal_index, batch.n_sites
    )
    gap = predictor.predict(soft)["band_gap"]
    gap.sum().backward()
    per_site = probs.grad.abs().amax(-1)
    per_crystal = torch.zeros(len(structures), dtype=per_site.dtype)
    per_crystal.index_reduce_(0, batch.crystal_index, per_site, "amax")
    return gap.detach().double().numpy(), per_crystal.double().numpy()


def main() -> None:
    """Measure and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="crystals per group")
    ap.add_argument("--model", default="perov5-band-gap")
    ap.add_argument("--name", default="gap_gradient", help="results file stem")
    ap.add_argument("--gate", type=float, nargs=2, metavar=("K", "B"), default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(TEST, "dir_gap")
    y = np.asarray(data.targets, dtype=float)
    gate = None if args.gate is None else {"sharpness": args.gate[0], "bias": args.gate[1]}
    predictor = build(model=args.model, gate=gate)
    res = {"machine": machine(args.threads), "model": args.model, "n": args.n, "groups": {}}
    res["gate"] = gate
    for label, idx in (("metals", np.where(y == 0)[0]), ("gapped", np.where(y > 0)[0])):
        idx = idx[: args.n]
        gap, grad = gradients(predictor, [data.structures[i] for i in idx])
        res["groups"][label] = {
            "rows": [int(i) + 1 for i in idx],
            "predicted_gap_median": float(np.median(gap)),
            "predicted_gap_max": float(gap.max()),
            "max_abs_grad_median": float(np.median(grad)),
            "max_abs_grad_max": float(grad.max()),
            "n_grad_below_1e-6": int((grad < 1e-6).sum()),
        }
        g = res["groups"][label]
        print(
            f"{label}: predicted gap median {g['predicted_gap_median']:.2e} eV; max |dgap/dp| "
            f"median {g['max_abs_grad_median']:.2e}, max {g['max_abs_grad_max']:.2e}, "
            f"{g['n_grad_below_1e-6']} of {len(idx)} below 1e-6"
        )
    path = write_result(args.name, res)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
