"""Engine overhead: time per SMOACS step / time of the bare predictor forward+backward.

Both are measured side by side, interleaved, on the same batch (CHGNet, perovskite templates),
for several batch sizes. Goal: ratio <= 1.2. Usage:

    .venv/bin/python benchmarks/propose_overhead.py [--predictor chgnet|alignn]
        [--sizes 32 64 128 256]
        [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.smoacs.engine import Evaluator, SmoacsOptimizer
from smoacs_flows.smoacs.propose import ProposalRun

#: predictors and loss terms per benchmarked predictor; the rest of the campaign is shared
DRIVERS = {
    "chgnet": (
        {"chgnet": {"type": "chgnet"}},
        [
            {"term": "energy", "predictor": "chgnet"},
            {"term": "magmom_integer", "predictor": "chgnet", "property": "magmom_abs_total"},
            {"term": "tolerance_factor", "target": 0.9},
        ],
    ),
    "alignn": (
        {
            "gap": {"type": "alignn", "model": "perov5-band-gap"},
            "eform": {"type": "alignn", "model": "perov5-formation-energy"},
        },
        [
            {"term": "band_gap_hinge", "predictor": "gap", "target": 1.5, "margin": 0.3},
            {"term": "formation_energy", "predictor": "eform"},
            {"term": "tolerance_factor", "target": 0.9},
        ],
    ),
}


def campaign(n: int, device: str, predictor: str = "chgnet") -> dict:
    """A perovskite campaign driven by CHGNet (energy, moments) or ALIGNN (gap, E_form)."""
    predictors, losses = DRIVERS[predictor]
    return {
        "name": "overhead",
        "device": device,
        "templates": [
            {
                "source": "perovskite",
                "count": 8,
                "patterns": [[2, 4, -2], [1, 2, -1]],
                "length_range": [3.5, 4.5],
            }
        ],
        "predictors": predictors,
        "losses": losses,
        "geometry": {"angles": {"fixed": True}, "coords": {"mode": "bounded", "epsilon": 0.15}},
        "schedule": {"steps": 1000, "n_candidates": n, "batch_size": n},
    }


def bare_step(preds: dict, batch: SoftCrystalBatch) -> None:
    """Forward + backward of every predictor on leaf copies of the batch tensors."""
    lat = batch.lattice.detach().requires_grad_(True)
    frac = batch.frac_coords.detach().requires_grad_(True)
    probs = batch.element_probs.detach().requires_grad_(True)
    b = SoftCrystalBatch(lat, frac, probs, batch.crystal_index, batch.n_sites)
    total = 0.0
    for pred in preds.values():
        for name, value in pred.predict(b).items():
            if not name.startswith("site_"):
                total = total + value.sum()
    total.backward()


def main() -> None:
    """Print the step/bare ratio per batch size."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--predictor", choices=["chgnet", "alignn"], default="chgnet")
    args = ap.parse_args()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"predictor={args.predictor} device={args.device} threads={torch.get_num_threads()}")
    print(f"{'batch':>6} {'atoms':>6} {'step_ms':>9} {'bare_ms':>9} {'ratio':>6}")
    for n in args.sizes:
        run = ProposalRun(campaign_from_dict(campaign(n, args.device, args.predictor)))
        gen = torch.Generator().manual_seed(0)
        state = run.make_state(run.batches[0], gen)
        ev = Evaluator(run.predictors, run.terms, run.criteria.soft_success)
        opt = SmoacsOptimizer(state, ev, run.settings, gen)
        opt.refresh(0.01)
        pred = run.predictors
        opt.gradient_step(0)  # warm-up both paths
        with torch.no_grad():
            batch, _ = state(0.01)
        bare_step(pred, batch)
        steps, bares = [], []
        for r in range(args.reps):  # interleaved: A B A B ...
            sync()
            t0 = time.perf_counter()
            opt.gradient_step(r + 1)
            sync()
            steps.append(time.perf_counter() - t0)
            with torch.no_grad():
                batch, _ = state(0.01)
            sync()
            t0 = time.perf_counter()
            bare_step(pred, batch)
            sync()
            bares.append(time.perf_counter() - t0)
        s, b = statistics.median(steps), statistics.median(bares)
        print(f"{n:>6} {int(state.n_sites.sum()):>6} {1e3 * s:>9.1f} {1e3 * b:>9.1f} {s / b:>6.2f}")


if __name__ == "__main__":
    main()
