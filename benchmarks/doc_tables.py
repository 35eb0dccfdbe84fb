"""Print the markdown tables of docs/benchmarks.md from benchmarks/results/*.json.

Usage: .venv/bin/python benchmarks/doc_tables.py [NAME ...]   (default: every results file used)
"""

from __future__ import annotations

import json
import sys
from statistics import median

from _common import RESULTS


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _header(d: dict) -> None:
    m = d["machine"]
    print(f"`{m['command']}` (commit {m['commit']}, {m['date_utc']})\n")
    gpu = m.get("gpu")
    if gpu:
        print(
            f"Machine: {gpu['name']} ({gpu['memory_gib']} GiB), {m['cpu_count']} CPU cores, "
            f"Python {m['python']}, torch {gpu['torch']} (CUDA {gpu['cuda']})\n"
        )


def _load_str(m: dict) -> str:
    return "/".join(f"{x:.0f}" for x in m["loadavg_1_5_15"])


def sun_scale(d: dict) -> None:
    """S.U.N. vs group_structures, one row per size and task."""
    _header(d)
    print(
        "| candidates × references | task | ours wall / CPU (s) | `group_structures` wall / CPU "
        "(s) | peer sample | ratio wall / CPU | identical | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in d["sizes"]:
        for key, label in (
            ("uniqueness", "uniqueness"),
            ("novelty_grouping", "novelty (grouping)"),
        ):
            t = r.get(key)
            if t is None:
                continue
            f = t["peer_fraction"]
            sample = "all" if f >= 1 else f"f = {f:.3f} ({t['peer_sampled_structures']:,} str.)"
            est = "≈ " if f < 1 else ""
            print(
                f"| {r['n_candidates']:,} × {r['n_references']:,} | {label} | "
                f"{t['ours_wall_s']:.1f} / {t['ours_cpu_s']:.1f} | {est}{t['peer_wall_s']:.0f} / "
                f"{est}{t['peer_cpu_s']:.0f} | {sample} | **{t['ratio_wall']:.1f}× / "
                f"{t['ratio_cpu']:.1f}×** | {t['identical']} | "
                f"{r['loadavg_before'][0]:.0f} |"
            )
        s = r.get("sun_stage_call")
        if s:
            same_u = s.get("uniqueness_identical_to_group_structures", "—")
            diff_n = s.get("novel_flags_differing_from_grouping", "—")
            print(
                f"| {r['n_candidates']:,} × {r['n_references']:,} | S.U.N. stage call "
                f"(uniqueness + novelty) | {s['ours_wall_s']:.1f} / {s['ours_cpu_s']:.1f} | — | — "
                f"| — | uniqueness {same_u}; novel flags ≠ grouping: {diff_n} | "
                f"{r['loadavg_after'][0]:.0f} |"
            )
    print()
    for r in d["sizes"]:
        s = r.get("sun_stage_call")
        if s:
            print(
                f"- {r['n_candidates']:,} × {r['n_references']:,}: {r['n_formulas']:,} formulas; "
                f"unique {s['unique']:,}, novel {s['novel']:,}, unique & novel "
                f"{s['unique_and_novel']:,}; {s['fit_calls']:,} fit calls"
            )


def relax_batch(d: dict) -> None:
    """Relaxation paths side by side."""
    _header(d)
    print(
        "| path | wall (s) | CPU (s) | converged | ours faster (wall / CPU) "
        "| max / median \\|ΔE\\| vs ours (meV/atom) | load |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in d["paths"].items():
        sp = (
            f"{r['ours_speedup_wall']:.2f}× / {r['ours_speedup_cpu']:.2f}×"
            if "ours_speedup_wall" in r
            else "—"
        )
        de = (
            f"{r['max_abs_dE_vs_ours_meV_per_atom']:.3f} / "
            f"{r['median_abs_dE_vs_ours_meV_per_atom']:.3f}"
            if "max_abs_dE_vs_ours_meV_per_atom" in r
            else "—"
        )
        print(
            f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['converged']}/{d['n']} | {sp} | "
            f"{de} | {r['loadavg_before'][0]:.0f} |"
        )


def propose_overhead(d: dict) -> None:
    """Whole-run overhead."""
    _header(d)
    print(
        "| rep | run without replays (s) | predictor fwd+bwd (s) | ratio "
        "| autograd / no-grad calls |"
    )
    print("|---|---|---|---|---|")
    reps = d["reps"]
    for i, r in enumerate(reps, 1):
        if len(reps) > 5 and 3 < i <= len(reps) - 2:  # long runs: first 3 and last 2 rows
            if i == 4:
                print(f"| … ({len(reps) - 5} more in the JSON) | | | | |")
            continue
        print(
            f"| {i} | {r['run_s']:.2f} | {r['bare_s']:.2f} | {r['ratio']:.3f} | "
            f"{r['calls_grad']} / {r['calls_nograd']} |"
        )
    print(
        f"\nmedian {d['ratio_median']:.3f} (min {d['ratio_min']:.3f}, max {d['ratio_max']:.3f}); "
        f"load {_load_str(d['machine'])}"
    )


def gpu_overhead(_: dict | None = None) -> None:
    """Engine overhead on CUDA, before/after the per-step cuts (device/gpu_overhead.sh)."""
    rows = [(n, tag) for n in (8, 64) for tag in ("", "_before")]
    runs = {key: _load(f"propose_overhead_gpu_n{key[0]}{key[1]}") for key in rows}
    if any(d is None for d in runs.values()):
        print("(no results file)")
        return
    for d in runs.values():
        m = d["machine"]
        print(f"- `{m['command']}` (commit {m['commit']}, {m['date_utc']})")
    m, gpu = runs[rows[0]]["machine"], runs[rows[0]]["machine"]["gpu"]
    print(
        f"\nMachine: {gpu['name']} ({gpu['memory_gib']} GiB), {m['cpu_count']} CPU cores, "
        f"Python {m['python']}, torch {gpu['torch']} (CUDA {gpu['cuda']})\n"
    )
    print(
        "| n | engine (commit) | runs | ratio median (min–max) | run without replays (s) "
        "| predictor fwd+bwd (s) | engine's own = run − predictor (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, tag in rows:
        d = runs[(n, tag)]
        reps = d["reps"]
        run = median(r["run_s"] for r in reps)
        bare = median(r["bare_s"] for r in reps)
        own = median(r["run_s"] - r["bare_s"] for r in reps)
        print(
            f"| {n} | {d['machine']['commit']} | {len(reps)} | **{d['ratio_median']:.3f}** "
            f"({d['ratio_min']:.3f}–{d['ratio_max']:.3f}) | {run:.2f} | {bare:.2f} | {own:.2f} |"
        )
    print("\nrun/predictor columns: medians over the runs; load " + _load_str(d["machine"]))


def query_scale(d: dict) -> None:
    """Index vs store queries."""
    _header(d)
    b = d["builder"]
    print(
        f"builder: {b['documents']:,} documents in {b['first_build_s']:.1f} s "
        f"({b['documents'] / b['first_build_s']:.0f}/s); no-op rerun {b['noop_rerun_s']:.2f} s\n"
    )
    print(
        "| query | hits | SQLite index (median) | store, filter/sort/limit pushed down | ratio "
        "| same ids and order |"
    )
    print("|---|---|---|---|---|---|")
    for name, q in d["queries"].items():
        ratio = q["store_s"] / max(q["index_median_s"], 1e-9)
        label = name.replace("|", "\\|")
        print(
            f"| {label} | {q['hits']} | {q['index_median_s'] * 1e3:.1f} ms | "
            f"{q['store_s'] * 1e3:.0f} ms | {ratio:.0f}× | {q['same_ids_and_order']} |"
        )


def submit_scale(d: dict) -> None:
    """Submit of the paper-size campaign to the embedded LaunchPad."""
    _header(d)
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| proposals | {d['proposals']:,} ({d['proposals'] // d['batch_size']} batches of "
        f"{d['batch_size']}; batches_per_job {d['batches_per_job']}, relax_group "
        f"{d['relax_group']}) |"
    )
    print(f"| fireworks created | {d['fireworks']} ({d['categories']}) |")
    print(f"| build (validate + Flow + workflow) | {d['build_s']:.1f} s |")
    print(f"| add to the embedded LaunchPad | {d['add_s']:.1f} s |")
    print(
        f"| **submit total** (imports excluded, {d['import_s']:.1f} s) | "
        f"**{d['submit_total_s']:.1f} s** |"
    )
    print(f"| LaunchPad file | {d['launchpad_bytes'] / 1e6:.1f} MB |")
    print(
        f"| LaunchPad session, file unchanged / re-read | {d['session_unchanged_s'] * 1e3:.1f} ms"
        f" / {d['session_reread_s']:.2f} s |"
    )
    print(f"| per-firework overhead, empty LaunchPad | {d['per_firework_empty_s']:.2f} s |")
    print(
        f"| per-firework overhead, beside the campaign | "
        f"{d['per_firework_beside_campaign_s']:.2f} s |"
    )
    print(f"\nload {_load_str(d['machine'])}")


def main() -> None:
    names = sys.argv[1:] or [
        "sun_scale",
        "sun_scale_full",
        "relax_batch",
        "relax_batch_gpu",
        "relax_batch_gpu_n256",
        "propose_overhead",
        "propose_overhead_gpu",
        "propose_overhead_cpu1",
        "gpu_overhead",
        "query_scale",
        "submit_scale",
    ]
    for name in names:
        d = _load(name)
        print(f"\n## {name}\n")
        if name == "gpu_overhead":
            gpu_overhead()
            continue
        if d is None:
            print("(no results file)")
            continue
        kind = next(
            k for k in ("sun_scale", "relax_batch", "propose_overhead", name) if name.startswith(k)
        )
        globals()[kind](d)


if __name__ == "__main__":
    main()
