"""``smoacs-flows submit`` and ``smoacs-flows run``."""

from __future__ import annotations

import argparse
import json
import sys

from smoacs_flows.cli_types import positive
from smoacs_flows.errors import InputError
from smoacs_flows.makers.discovery import LAUNCHPAD_HELP

#: the most local workers per category ``run`` starts
MAX_WORKERS = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``submit`` and ``run`` commands."""
    s = subparsers.add_parser(
        "submit",
        help="submit a campaign workflow to a FireWorks LaunchPad",
        description="Validate a campaign, build its workflow (proposal and relaxation jobs on "
        "the gpu category, the rest on cpu) and add it to a LaunchPad, tagged with the "
        "campaign name. Without --launchpad: the LaunchPad FireWorks' configuration names "
        "(FW_CONFIG_FILE, ...), else the embedded one under $SMOACS_HOME.",
    )
    s.add_argument("campaign", help="campaign YAML")
    s.add_argument("--launchpad", default=None, help=LAUNCHPAD_HELP)
    s.add_argument(
        "--store",
        default=None,
        help="JobStore YAML embedded in every firework (default: the embedded store "
        "for the embedded LaunchPad, else the worker's jobflow JOB_STORE)",
    )
    s.add_argument(
        "--new-version",
        action="store_true",
        help="submit a campaign whose name is already on the LaunchPad again",
    )
    s.add_argument("--json", action="store_true", help="print the submission as JSON")
    s.set_defaults(func=_submit)

    v = subparsers.add_parser(
        "validate",
        help="check a campaign as submit would, writing nothing",
        description="Every check submit makes before it opens a LaunchPad: the campaign and "
        "every stage section, templates and oxidation patterns, predictor and loss names, "
        "reference files; then the Flow is built and its jobs counted. Nothing is written "
        "(not even $SMOACS_HOME). Exit 0 when valid, 2 with one error line when not.",
    )
    v.add_argument("campaign", help="campaign YAML")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.set_defaults(func=_validate)

    r = subparsers.add_parser(
        "run",
        help="run a campaign here: embedded LaunchPad and local gpu/cpu workers",
        description="Submit the campaign to the embedded LaunchPad ($SMOACS_HOME), run one "
        "local worker per category until the campaign is done or stuck, with progress per "
        "stage, then print the funnel and the top candidates.",
    )
    r.add_argument("campaign", help="campaign YAML")
    r.add_argument(
        "--new-version",
        action="store_true",
        help="run a campaign whose name is already on the embedded LaunchPad again",
    )
    r.add_argument("--timeout", type=positive, default=None, help="seconds (default: none)")
    r.add_argument("--poll", type=positive, default=2.0, help="progress interval, s")
    r.add_argument(
        "--cpu-workers",
        type=int,  # its range (1..64) is checked with the campaign, naming both ends
        default=1,
        metavar="N",
        help="worker processes on the cpu category (and on the DFT one, if it has its own): "
        "GPAW runs one thread per job, so N DFT jobs run side by side on N cores "
        "(default 1, as FireWorks' rlaunch rapidfire)",
    )
    r.set_defaults(func=_run)


def _submit(args: argparse.Namespace) -> int:
    from smoacs_flows.campaign import load_campaign
    from smoacs_flows.makers.discovery import announce
    from smoacs_flows.makers.submit import campaign_flow, open_targets, submit

    # every check of the campaign before any LaunchPad or store is opened: nothing written
    campaign = load_campaign(args.campaign)
    flow = campaign_flow(campaign)
    lp, store, lines = open_targets(args.launchpad, args.store)
    for line in lines:
        announce(line)
    sub = submit(campaign, lp, new_version=args.new_version, store=store, flow=flow)
    if args.json:
        print(
            json.dumps(
                {
                    "campaign": sub.campaign,
                    "version": sub.version,
                    "tag": sub.tag,
                    "launchpad": sub.launchpad,
                    "fw_ids": sub.fw_ids,
                    "categories": sub.categories,
                    "timings": sub.timings,
                }
            )
        )
    else:
        cats = ", ".join(f"{k or 'none'}: {v}" for k, v in sorted(sub.categories.items()))
        print(
            f"submitted {sub.campaign} v{sub.version} ({sub.tag}) to the {sub.launchpad}: "
            f"{sub.n_fireworks} fireworks, ids {sub.fw_ids[0]}-{sub.fw_ids[-1]} ({cats}) "
            f"in {sub.timings['total']:.1f} s"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from collections import Counter

    from smoacs_flows.campaign import load_campaign
    from smoacs_flows.makers.submit import campaign_flow

    campaign = load_campaign(args.campaign)
    flow = campaign_flow(campaign)
    stages = Counter(str(j.metadata.get("stage", "?")) for j, _ in flow.iterflow())
    summary = {
        "campaign": campaign.name,
        "valid": True,
        "jobs": sum(stages.values()),
        "stages": dict(stages),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        parts = ", ".join(f"{k} {v}" for k, v in stages.items())
        print(
            f"{args.campaign}: valid campaign {campaign.name!r}; {summary['jobs']} jobs ({parts})"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from smoacs_flows.campaign import load_campaign
    from smoacs_flows.makers.discovery import announce, flush_announcements
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, describe
    from smoacs_flows.makers.run import run_campaign
    from smoacs_flows.makers.stages import format_summary
    from smoacs_flows.makers.submit import campaign_flow, firework_store

    if not 1 <= args.cpu_workers <= MAX_WORKERS:
        raise InputError(f"--cpu-workers: {args.cpu_workers} is not in 1..{MAX_WORKERS}")
    campaign = load_campaign(args.campaign)  # every check before the LaunchPad is opened
    flow = campaign_flow(campaign)
    lp = EmbeddedLaunchPad()
    announce(f"LaunchPad: {describe(lp)} (smoacs-flows run always uses the embedded one)")
    announce(firework_store(lp)[1])
    flush_announcements()
    res = run_campaign(
        campaign,
        flow=flow,
        new_version=args.new_version,
        poll=args.poll,
        timeout=args.timeout,
        echo=lambda s: print(s, flush=True),
        cpu_workers=args.cpu_workers,
    )
    print(
        f"campaign {res.submission.campaign} v{res.submission.version}: {res.state} "
        f"after {res.wall_time:.0f} s"
    )
    for f in res.fizzled:
        print(f"fizzled: {f}", file=sys.stderr)
    if res.summary:
        print(format_summary(res.summary))
    try:  # the candidates collection, so that `query` and `report` answer at once
        from smoacs_flows.stores.results import update_results

        stats = update_results(launchpad=lp)
        print(
            f"results store: {stats.get('documents_written', 0)} candidate documents "
            f"updated; try `smoacs-flows query --campaign {res.submission.campaign}` or "
            f"`smoacs-flows report {res.submission.campaign} --out report.html`"
        )
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why, go on
        print(f"results store not updated: {type(exc).__name__}: {exc}", file=sys.stderr)
    if res.state != "done":
        print(f"worker logs: {', '.join(str(p) for p in res.worker_logs)}", file=sys.stderr)
        return 1
    return 0
