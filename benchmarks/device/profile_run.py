"""Where a whole SMOACS run's time goes: torch.profiler and cProfile of one run.

The run is benchmarks/propose_overhead.py --whole's (CHGNet energy + moment + tolerance terms,
perovskite templates, refreshes, mutation, annealing, export), after one warm-up run. The
predictor's ``predict`` and ``refresh`` are labelled (``record_function``), so the operator
tables separate the predictor's forward from the engine's own work; the backward of the
predictor runs inside the engine's ``backward`` call and is labelled with it.

Usage: python3 benchmarks/device/profile_run.py OUT_PREFIX [--device cuda] [--n 8]
    [--steps 20] [--threads 1]
Writes OUT_PREFIX.txt (tables) and, when it is under 16 MiB, OUT_PREFIX_trace.json.gz
(a Chrome/Perfetto trace of the profiled run).
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

import torch  # noqa: E402
from propose_overhead import whole_campaign  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from smoacs_flows.campaign import campaign_from_dict  # noqa: E402
from smoacs_flows.smoacs.propose import ProposalRun  # noqa: E402

MAX_TRACE = 16 * 2**20


def _label(preds: dict) -> None:
    """Wrap each predictor's predict/refresh in a profiler range named after it."""
    for name, pred in preds.items():
        for meth in ("predict", "refresh"):
            real = getattr(pred, meth)

            def wrapped(batch, real=real, label=f"predictor.{name}.{meth}"):
                with record_function(label):
                    return real(batch)

            setattr(pred, meth, wrapped)


def main() -> None:
    """Profile one whole run; write the tables (and the trace when small enough)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_prefix")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = ProposalRun(campaign_from_dict(whole_campaign(args.n, args.device, "chgnet", args.steps)))
    _label(run.predictors)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run.run()  # warm-up
    sync()
    t0 = time.perf_counter()
    run.run()
    sync()
    plain = time.perf_counter() - t0

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=False) as prof:
        with record_function("whole_run"):
            run.run()
        sync()
    ka = prof.key_averages()
    out = io.StringIO()
    out.write(
        f"one whole run, n {args.n}, {args.steps} steps, device {args.device}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}: "
        f"{plain:.3f} s unprofiled\n\n"
    )
    out.write("== by self CPU time (top 60)\n")
    out.write(ka.table(sort_by="self_cpu_time_total", row_limit=60, max_name_column_width=60))
    if cuda:
        out.write("\n== by self device time (top 40)\n")
        out.write(ka.table(sort_by="self_device_time_total", row_limit=40))
    labels = [e for e in ka if e.key.startswith(("predictor.", "whole_run"))]
    out.write("\n== labelled ranges (CPU total / device total, ms; calls)\n")
    for e in labels:
        dev = getattr(e, "device_time_total", 0.0) / 1e3
        out.write(f"{e.key}: {e.cpu_time_total / 1e3:.1f} / {dev:.1f} ms; {e.count} calls\n")
    n_ops = sum(e.count for e in ka if e.key.startswith("aten::"))
    launch_keys = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
    launches = sum(e.count for e in ka if e.key in launch_keys)
    syncs = {
        e.key: e.count
        for e in ka
        if e.key
        in (
            "aten::_local_scalar_dense",
            "aten::item",
            "aten::nonzero",
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaMemcpyAsync",
        )
    }
    out.write(f"\naten ops (all levels): {n_ops}; kernel launches: {launches}; syncs: {syncs}\n")

    pr = cProfile.Profile()
    sync()
    pr.enable()
    run.run()
    sync()
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(50)
    st.sort_stats("cumulative").print_stats(50)
    out.write("\n== cProfile of another whole run\n" + buf.getvalue())
    Path(f"{args.out_prefix}.txt").write_text(out.getvalue())

    trace = Path(f"{args.out_prefix}_trace.json")
    prof.export_chrome_trace(str(trace))
    gz = Path(f"{trace}.gz")
    gz.write_bytes(gzip.compress(trace.read_bytes(), 6))
    trace.unlink()
    if gz.stat().st_size > MAX_TRACE:
        print(f"trace {gz.stat().st_size / 2**20:.1f} MiB > 16 MiB: not kept")
        gz.unlink()
    print(f"wrote {args.out_prefix}.txt; unprofiled run {plain:.3f} s")


if __name__ == "__main__":
    main()
