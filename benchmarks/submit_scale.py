"""Orchestration at scale: build + submit a 49,152-proposal campaign; embedded LaunchPad overhead.

1. The paper's campaign size (49,152 proposals = 192 optimiser batches of 256) from
   ``campaigns/perovskite.yaml``: time to validate the campaign, build the jobflow Flow, convert
   it to a FireWorks workflow and add it to a fresh embedded LaunchPad (goal: < 30 s), and the
   number of fireworks it creates (batching keeps it far below one per proposal).
2. Per-firework overhead of the embedded LaunchPad: trivial jobs (``a + b``) run through the
   same worker loop as ``smoacs-flows run`` (checkout, JobStore write, completion), on an empty
   LaunchPad and on one that also holds the big campaign (every session re-reads and rewrites
   the LaunchPad file when another process changed it, so the cost grows with its size).

Usage::

    .venv/bin/python benchmarks/submit_scale.py [--n 49152] [--batch-size 256]
        [--batches-per-job 1] [--relax-group 1] [--trivial 20]

Writes benchmarks/results/submit_scale.json (or results/NAME.json with --name).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _trivial_overhead(n: int, work_dir: Path) -> float:
    """Seconds per firework for ``n`` trivial jobs run by one in-process worker."""
    from jobflow import Flow
    from jobflow.managers.fireworks import flow_to_workflow

    from smoacs_flows.makers.jobs import route
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
    from smoacs_flows.makers.worker import work
    from smoacs_flows.stores import embedded_job_store
    from tests.makers._jobs import add

    lp = EmbeddedLaunchPad()
    jobs = [route(add(i, 1), "bench", {"stage": "bench"}) for i in range(n)]
    lp.add_wf(flow_to_workflow(Flow(jobs), store=embedded_job_store()))
    cwd = os.getcwd()
    t0 = time.perf_counter()
    done = work(lp, "bench", work_dir, until_idle=True)
    dt = time.perf_counter() - t0
    os.chdir(cwd)
    assert done == n, (done, n)
    return dt / n


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=49_152)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches-per-job", type=int, default=1)
    ap.add_argument("--relax-group", type=int, default=1)
    ap.add_argument("--trivial", type=int, default=20, help="trivial fireworks to time")
    ap.add_argument("--name", default="submit_scale", help="results/NAME.json")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="smoacs-bench-"))
    os.environ["SMOACS_HOME"] = str(home)
    import sys

    sys.path.insert(0, str(ROOT))
    t_import = time.perf_counter()
    from smoacs_flows.campaign import load_campaign
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
    from smoacs_flows.makers.submit import submit

    t_import = time.perf_counter() - t_import

    per_fw_empty = _trivial_overhead(args.trivial, home / "trivial-empty")
    # a fresh LaunchPad for the campaign
    (home / "launchpad" / "fireworks.json").unlink()

    camp = load_campaign(ROOT / "campaigns" / "perovskite.yaml")
    camp.schedule.n_candidates = args.n
    camp.schedule.batch_size = args.batch_size
    camp.stages = {
        "orchestration": {"batches_per_job": args.batches_per_job, "relax_group": args.relax_group}
    }
    t0 = time.perf_counter()
    sub = submit(camp)
    wall = time.perf_counter() - t0
    lp = EmbeddedLaunchPad()
    size = lp.path.stat().st_size
    t1 = time.perf_counter()
    with lp.session(write=False):
        pass
    t_noop = time.perf_counter() - t1
    lp2 = EmbeddedLaunchPad()  # a second "process": its first session must read the file
    t1 = time.perf_counter()
    lp2.get_fw_ids({"state": "READY"})
    t_read = time.perf_counter() - t1
    per_fw_full = _trivial_overhead(args.trivial, home / "trivial-full")

    print(f"| proposals | {args.n:,} ({args.n // args.batch_size} batches of {args.batch_size}) |")
    print(f"| fireworks created | {sub.n_fireworks} ({sub.categories}) |")
    print(f"| build (validate + Flow + workflow) | {sub.timings['build']:.1f} s |")
    print(f"| add to embedded LaunchPad | {sub.timings['add']:.2f} s |")
    print(f"| submit total (excl. imports {t_import:.1f} s) | {wall:.1f} s |")
    print(f"| LaunchPad file | {size / 1e6:.1f} MB |")
    print(f"| session, file unchanged / re-read | {t_noop * 1e3:.1f} ms / {t_read:.2f} s |")
    print(f"| per-firework overhead, empty LaunchPad | {per_fw_empty:.2f} s |")
    print(f"| per-firework overhead, beside the campaign | {per_fw_full:.2f} s |")
    from _common import machine, write_result

    result = {
        "machine": machine(),
        "proposals": args.n,
        "batch_size": args.batch_size,
        "batches_per_job": args.batches_per_job,
        "relax_group": args.relax_group,
        "fireworks": sub.n_fireworks,
        "categories": sub.categories,
        "build_s": sub.timings["build"],
        "add_s": sub.timings["add"],
        "submit_total_s": wall,
        "import_s": t_import,
        "launchpad_bytes": size,
        "session_unchanged_s": t_noop,
        "session_reread_s": t_read,
        "per_firework_empty_s": per_fw_empty,
        "per_firework_beside_campaign_s": per_fw_full,
        "trivial_fireworks": args.trivial,
    }
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
