"""``smoacs-flows propose``: run a campaign's proposal stage."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from smoacs_flows.campaign import load_campaign
from smoacs_flows.cli_types import count, count0
from smoacs_flows.io import atomic_output_dir, write_jsonl
from smoacs_flows.smoacs.propose import ProposalResult, ProposalRun, success_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``propose`` sub-command."""
    p = sub.add_parser(
        "propose",
        help="optimise a batch of crystals with SMOACS",
        description="Run the SMOACS proposal stage of CAMPAIGN and write DIR/proposals.jsonl "
        "and DIR/cif/<id>.cif. Everything is validated before DIR is touched.",
    )
    p.add_argument("campaign", type=Path, help="campaign YAML file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n", type=count, default=None, help="number of candidates")
    p.add_argument("--steps", type=count, default=None, help="optimisation steps")
    p.add_argument("--seed", type=count0, default=None, help="random seed (default: campaign's)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_propose)


def write_outputs(out: Path, result: ProposalResult, summary: dict) -> None:
    """Write proposals.jsonl, cif/ and summary.json into ``out``."""
    write_jsonl(out / "proposals.jsonl", result.records)
    cif_dir = out / "cif"
    cif_dir.mkdir(parents=True, exist_ok=True)
    for rec, s in zip(result.records, result.structures, strict=True):
        s.to(filename=str(cif_dir / f"{rec['id']}.cif"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if result.history:
        plot_history(result, out / "loss.png")


def plot_history(result: ProposalResult, path: Path) -> None:
    """Loss curves (mean and best per batch) and success rates, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for bi, hist in sorted(result.history.items()):
        if not hist:
            continue
        mean, best = zip(*hist, strict=True)
        (line,) = ax.plot(mean, lw=1.2, label=f"batch {bi} mean")
        ax.plot(best, lw=1.0, ls="--", color=line.get_color(), label=f"batch {bi} best")
    ax.set_xlabel("step")
    ax.set_ylabel("total loss")
    ax.set_title("SMOACS optimisation")
    if len(result.history) <= 4:
        ax.legend(fontsize=7)
    rows = success_table(result.records)
    if rows:
        names = [r[0] for r in rows]
        bx.barh(names, [100.0 * ok / n for _, ok, n in rows], color="tab:green")
        bx.set_xlim(0, 100)
        bx.set_xlabel("success rate (%)")
        bx.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(console: Console, summary: dict) -> None:
    """The per-criterion success table."""
    table = Table(
        title=f"SMOACS proposals: {summary['campaign']} ({summary['n_exported']} exported)"
    )
    table.add_column("criterion")
    table.add_column("success", justify="right")
    table.add_column("evaluated", justify="right")
    table.add_column("rate", justify="right")
    for name, ok, n in summary["success"]:
        table.add_row(name, str(ok), str(n), f"{100.0 * ok / n:.1f}%")
    console.print(table)
    st = summary["stats"]
    console.print(
        f"steps {summary['steps']} · {summary['wall_s']:.1f} s · mutated {st.get('mutated', 0)}"
        f" · SA accepted {st.get('sa_accepted', 0)}/{st.get('sa_proposed', 0)}"
        f" · NaN resets {st.get('nan_resets', 0)} · dropped {summary['n_dropped']}"
    )


def run_propose(args: argparse.Namespace) -> int:
    """Validate, optimise, write atomically, print the summary."""
    from smoacs_flows.campaign import MAX_CANDIDATES, MAX_SEED, MAX_STEPS
    from smoacs_flows.errors import SpecError

    for opt, v, hi in (("--n", args.n, MAX_CANDIDATES), ("--steps", args.steps, MAX_STEPS)):
        if v is not None and not 1 <= v <= hi:
            raise SpecError(f"{opt}: must be between 1 and {hi}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise SpecError(f"--seed: must be between 0 and {MAX_SEED}")
    from smoacs_flows.io import check_output_dir

    # refused before any work: an --out that is a file, or a --force that would delete the
    # SMOACS home or the campaign file
    check_output_dir(args.out, force=args.force, protect=[args.campaign])
    console = Console()
    campaign = load_campaign(args.campaign)
    run = ProposalRun(campaign, n_candidates=args.n, steps=args.steps, seed=args.seed)
    t0 = time.perf_counter()
    total = len(run.batches) * run.steps
    with Progress(
        TextColumn("[bold]proposing"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("propose", total=total)
        result = run.run(progress=lambda k: bar.advance(task, k))
    summary = {
        "campaign": campaign.name,
        "seed": run.seed,
        "n_requested": run.n,
        "n_exported": len(result.records),
        "n_dropped": len(result.dropped),
        "dropped": result.dropped,
        "steps": run.steps,
        "device": str(run.device),
        "wall_s": time.perf_counter() - t0,
        "success": success_table(result.records),
        "stats": result.stats,
        "campaign_spec": yaml.safe_load(yaml.safe_dump(campaign.model_dump(mode="json"))),
        # each loss term and the predicted quantity it acts on (e.g. which moment)
        "loss_terms": {
            t.name: {"term": t.term, "weight": t.weight, "reads": list(t.reads)} for t in run.terms
        },
        # remote template sources: database version, material ids, query, cache file
        "template_provenance": run.template_provenance,
    }
    # the campaign file and its template files/folders are inputs --force must not delete
    inputs = [args.campaign, *(t.source for t in campaign.templates if Path(t.source).exists())]
    with atomic_output_dir(args.out, force=args.force, protect=inputs) as tmp:
        write_outputs(tmp, result, summary)
    print_summary(console, summary)
    console.print(f"wrote {args.out}/proposals.jsonl and {len(result.records)} CIFs")
    return 0
