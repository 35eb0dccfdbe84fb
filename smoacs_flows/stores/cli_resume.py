"""``smoacs-flows resume``: what failed and why, rerun with overrides, release held fireworks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smoacs_flows.errors import SmoacsError
from smoacs_flows.stores.cli_checks import _tag


def resume_command(args: argparse.Namespace) -> int:
    """``smoacs-flows resume``: rerun failed and lost fireworks, release held ones."""
    from smoacs_flows.makers.discovery import announce
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, resolve_launchpad
    from smoacs_flows.makers.recovery import (
        LOST_AFTER,
        Overrides,
        parse_assignments,
        parse_walltime,
        resume,
    )

    ov = Overrides(
        incar=parse_assignments(args.incar, "--incar", upper=True) if args.incar else {},
        max_errors=args.max_errors,
        gpaw=parse_assignments(args.gpaw, "--gpaw") if args.gpaw else {},
        walltime=parse_walltime(args.walltime) if args.walltime else None,
        category=args.category,
        cores=args.cores,
        nodes=args.nodes,
    )
    if args.max_errors is not None and args.max_errors < 1:
        raise SmoacsError("--max-errors: must be at least 1")
    lp, line = resolve_launchpad(args.launchpad)
    announce(line)
    version, tag = _tag(lp, args.campaign, args.version)
    after = LOST_AFTER if args.lost_after is None else args.lost_after
    if args.run and args.lost_after is None and isinstance(lp, EmbeddedLaunchPad):
        from smoacs_flows.config import smoacs_home_path
        from smoacs_flows.makers.run import run_alive

        # no run of ours alive: a RUNNING firework has no worker (it was killed), so it is
        # lost now, not after the heartbeat timeout (it would wait for ever otherwise)
        if not run_alive(smoacs_home_path() / "runs" / f"{args.campaign}-v{version}"):
            after = 0
    failed = resume(lp, tag, ov, args.stage, after, args.dry_run, args.fw)
    from smoacs_flows.makers.recovery import held_fireworks, release_held

    held = release_held(lp, tag, args.dry_run, ov) if args.defused else held_fireworks(lp, tag)
    for f in held:
        if args.defused:
            verb = "would release" if args.dry_run else "released"
            extra = f" [changes: {', '.join(f['changes'])}]" if f.get("changes") else ""
            print(f"{verb} {f['name']} (fw {f['fw_id']}, {f['stage']}, was {f['state']}){extra}")
        else:
            print(
                f"held: {f['name']} (fw {f['fw_id']}, {f['stage']}) is {f['state']}; "
                "resume --defused releases it"
            )
    if args.defused and held and not failed and not args.dry_run and not args.run:
        return 0
    if not failed and not (args.run and not args.dry_run and _unfinished(lp, tag)):
        print(
            f"campaign {args.campaign} v{version}: nothing to resume (no FIZZLED or lost fireworks)"
        )
        return 0
    if not failed:
        print(f"campaign {args.campaign} v{version}: nothing failed; running what still waits")
    verb = "would rerun" if args.dry_run else "rerunning"
    for f in failed:
        extra = f" [changes: {', '.join(f.changes)}]" if f.changes else ""
        print(
            f"{verb} {f.name} (fw {f.fw_id}, {f.stage}, {f.state}, {f.category}): {f.reason}{extra}"
        )
    if (ov.walltime or ov.cores or ov.nodes) and not args.dry_run:
        print(
            "note: the walltime / size is in each rerun's spec._queueadapter; FireWorks "
            "applies it when the rerun is submitted in reservation mode (qlaunch -r)"
        )
    if args.run and not args.dry_run:
        if not isinstance(lp, EmbeddedLaunchPad):
            raise SmoacsError(
                "--run works with the embedded LaunchPad; on a cluster start "
                "workers with rlaunch/qlaunch (docs/orchestration.md)"
            )
        from smoacs_flows.makers.discovery import flush_announcements

        flush_announcements()
        from smoacs_flows.config import home_path
        from smoacs_flows.makers.run import run_workers

        cats = sorted(_categories(lp, tag))
        state, logs = run_workers(
            lp,
            tag,
            cats,
            home_path("runs", f"{args.campaign}-v{version}"),
            echo=lambda s: print(s, flush=True),
        )
        print(f"campaign {args.campaign} v{version}: {state}")
        if state != "done":
            print(f"worker logs: {', '.join(map(str, logs))}", file=sys.stderr)
            return 1
    return 0


def _unfinished(lp: Any, tag: str) -> bool:
    """Whether fireworks of the campaign are still waiting or ready (a worker stopped early:
    ``resume --run`` then runs them even though nothing failed)."""
    from smoacs_flows.makers.run import stage_counts

    return any(
        c.get(s) for c in stage_counts(lp, tag).values() for s in ("WAITING", "READY", "RESERVED")
    )


def _categories(lp: Any, tag: str) -> set[str]:
    from smoacs_flows.makers.launchpad import lp_session

    with lp_session(lp, write=False):
        return {
            d["spec"].get("_category", "")
            for d in lp.fireworks.find({"spec.tags": tag}, {"spec._category": 1})
        }
