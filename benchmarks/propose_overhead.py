"""Engine overhead: a whole SMOACS run (or one step) / the predictor's own forward + backward.

``--whole`` (the headline figure): repeated whole optimisation runs (``ProposalRun.run``: graph
refreshes, gradient steps, mutation, simulated annealing and export of the discrete crystals)
with every predictor call instrumented: right after each call inside the run, the same
predictor is run bare on leaf copies of the same inputs (forward, plus backward of the summed
outputs when the call was under autograd), with the graphs the run had at that moment. The bare
time is taken out of the run's clock, so ratio = (run − bare) / bare, measured interleaved in
one process. Repeats until ``--budget`` seconds have passed and at least ``--min-reps`` runs are
done; threads pinned with ``torch.set_num_threads(--threads)``; on CUDA (``--device cuda``) the
GPU is waited for around each bare replay. Goal: ratio <= 1.1. Writes
benchmarks/results/propose_overhead.json.

Without ``--whole``: one engine step vs the bare predictor step, interleaved, per batch size.

    .venv/bin/python benchmarks/propose_overhead.py --whole [--predictor chgnet|alignn]
        [--n 8] [--steps 20] [--threads 1] [--budget 60] [--min-reps 1] [--device cpu|cuda]
    .venv/bin/python benchmarks/propose_overhead.py [--sizes 32 64 128 256] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine, write_result

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


def _instrument(preds: dict, acc: dict, device: str = "cpu") -> None:
    """Wrap each predictor's ``predict``: after the real call, time a bare replay into acc."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def wrap(real):
        def predict(batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
            out = real(batch)
            grad = torch.is_grad_enabled()
            sync()  # the real call's queued GPU work stays on the run's clock
            t0 = time.perf_counter()
            if grad:
                lat = batch.lattice.detach().requires_grad_(True)
                frac = batch.frac_coords.detach().requires_grad_(True)
                probs = batch.element_probs.detach().requires_grad_(True)
                b = SoftCrystalBatch(lat, frac, probs, batch.crystal_index, batch.n_sites)
                total = sum(v.sum() for v in real(b).values())
                total.backward()
            else:
                real(batch)
            sync()
            acc["bare_s"] += time.perf_counter() - t0
            acc["calls_grad" if grad else "calls_nograd"] += 1
            return out

        return predict

    for pred in preds.values():
        pred.predict = wrap(pred.predict)


def whole_campaign(n: int, device: str, predictor: str, steps: int) -> dict:
    """The campaign of one timed whole run: mutation halfway, annealing from 3/4, 4 refreshes."""
    cfg = campaign(n, device, predictor)
    cfg["schedule"].update(
        steps=steps,
        mutation={"steps": [steps // 2]},
        annealing={"start_step": (3 * steps) // 4, "trials": 2},
        graph_refresh={"count": 4},
    )
    return cfg


def whole(args) -> None:
    """Whole-run ratio, repeated until the time budget is spent and ``--min-reps`` runs are
    done; the JSON is rewritten after every run."""
    run = ProposalRun(
        campaign_from_dict(whole_campaign(args.n, args.device, args.predictor, args.steps))
    )
    acc = {"bare_s": 0.0, "calls_grad": 0, "calls_nograd": 0}
    _instrument(run.predictors, acc, args.device)
    run.run()  # warm-up (weights, first graphs), not counted
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    reps: list[dict] = []
    result = {
        "machine": machine(torch_threads=torch.get_num_threads()),
        "predictor": args.predictor,
        "device": args.device,
        "n_candidates": args.n,
        "steps": args.steps,
        "budget_s": args.budget,
        "min_reps": args.min_reps,
        "reps": reps,
    }
    t_start = time.perf_counter()
    while len(reps) < max(1, args.min_reps) or time.perf_counter() - t_start < args.budget:
        for k in acc:
            acc[k] = 0 if k.startswith("calls") else 0.0
        sync()
        t0 = time.perf_counter()
        res = run.run()
        sync()
        wall = time.perf_counter() - t0
        engine = wall - acc["bare_s"]
        reps.append(dict(acc, run_s=engine, ratio=engine / acc["bare_s"], records=len(res.records)))
        print(
            f"rep {len(reps)}: run {engine:.2f} s (bare replays removed), predictor fwd+bwd "
            f"{acc['bare_s']:.2f} s, ratio {engine / acc['bare_s']:.3f} "
            f"({acc['calls_grad']} autograd + {acc['calls_nograd']} no-grad calls)",
            flush=True,
        )
        ratios = [r["ratio"] for r in reps]
        result.update(
            ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios)
        )
        path = write_result(args.name, result)  # after every run: a killed run keeps its reps
    print(
        f"whole run / predictor fwd+bwd: median {result['ratio_median']:.3f} over {len(reps)} "
        f"runs (min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}); wrote {path}"
    )


def main() -> None:
    """Print the step/bare ratio per batch size, or the whole-run ratio (--whole)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--predictor", choices=["chgnet", "alignn"], default="chgnet")
    ap.add_argument("--whole", action="store_true", help="whole runs (see module docstring)")
    ap.add_argument("--n", type=int, default=8, help="--whole: candidates (one batch)")
    ap.add_argument("--steps", type=int, default=20, help="--whole: optimisation steps")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--budget", type=float, default=60.0, help="--whole: seconds of runs")
    ap.add_argument("--min-reps", type=int, default=1, help="--whole: at least this many runs")
    ap.add_argument("--name", default="propose_overhead", help="results/NAME.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.whole:
        whole(args)
        return
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
