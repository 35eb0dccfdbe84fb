"""Shared pieces of the results commands: option checks made before any store is opened or
created, and the campaign tag lookup."""

from __future__ import annotations

import argparse
from typing import Any

from smoacs_flows.errors import SmoacsError


def _no_home(args: argparse.Namespace) -> str | None:
    """Why nothing can be found, when every store is the embedded one and the SMOACS home does
    not exist (a read-only command must not create it); None otherwise."""
    import os

    from smoacs_flows.config import smoacs_home_path
    from smoacs_flows.stores.results import RESULTS_STORE_ENV

    external = (
        args.launchpad
        or getattr(args, "store", None)
        or args.results
        or os.environ.get("FW_CONFIG_FILE")
        or os.environ.get("JOBFLOW_CONFIG_FILE")
        or os.environ.get(RESULTS_STORE_ENV)
        or os.environ.get("SMOACS_JOB_STORE")
    )
    home = smoacs_home_path()
    if external or home.exists():
        return None
    return (
        f"nothing has run under the SMOACS home {home} (it does not exist); point at another "
        "with SMOACS_HOME=DIR, or at other stores with --launchpad / --results"
    )


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric options that can only be mistakes, refused before anything is opened."""
    import math

    if getattr(args, "version", None) is not None and args.version < 1:
        raise SmoacsError(f"--version: {args.version} (versions start at 1)")
    if getattr(args, "limit", None) is not None and args.limit < 0:
        raise SmoacsError(f"--limit: {args.limit} (0 means all; a count cannot be negative)")
    if getattr(args, "max_elements", None) is not None and args.max_elements < 1:
        raise SmoacsError(f"--max-elements: {args.max_elements} (at least 1)")
    if getattr(args, "lost_after", None) is not None and not (
        math.isfinite(args.lost_after) and args.lost_after >= 0
    ):
        raise SmoacsError(f"--lost-after: {args.lost_after} (seconds, finite and >= 0)")
    for name in (
        "e_hull_max",
        "polarisation_min",
        "moment_min",
        "moment_max",
        "chgnet_moment_min",
        "chgnet_moment_max",
    ):
        v = getattr(args, name, None)
        if v is not None and not math.isfinite(v):
            raise SmoacsError(f"--{name.replace('_', '-')}: {v} is not a finite number")


def _tag(lp: Any, campaign: str, version: int | None) -> tuple[int, str]:
    from smoacs_flows.makers.launchpad import describe, lp_session
    from smoacs_flows.makers.submit import campaign_tag, existing_versions

    with lp_session(lp, write=False):
        versions = existing_versions(lp, campaign)
    if not versions:
        raise SmoacsError(f"unknown campaign {campaign!r}: not on the {describe(lp)}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise SmoacsError(
            f"campaign {campaign!r} has no version {version} (versions: "
            f"{', '.join(map(str, versions))})"
        )
    return version, campaign_tag(campaign, version)
