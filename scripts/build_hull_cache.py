"""Build the shipped prototype-hull cache (``smoacs_flows/data/hull/chgnet-prototypes.json.gz``).

The offline S.U.N. stage relaxes the prototype phases of every chemical system its candidates
need (``smoacs_flows.screening.prototype_hull``) and caches them in the reference store. So
that the embedded demo does not spend its first minutes on them, the package ships the CHGNet
energies and structures of the systems the given campaigns reach, built here by running each
campaign's proposal, prefilter and relaxation stages as the flow does (same seeds, CPU) and
then its reference job, then exporting the prototype documents of the systems they used (with
``--export-only``: every one in the store). A store that already holds a system's phases is
reused (``--home``); from an empty one the same commit gives the same energies up to float
round-off (CPU relaxations, batched in chunks). Usage:

    .venv/bin/python scripts/build_hull_cache.py campaigns/halfmetal_small.yaml \
        [--home DIR] [--out FILE] [--export-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "smoacs_flows" / "data" / "hull" / "chgnet-prototypes.json.gz"


def run_campaign(path: Path) -> dict:
    """Proposals, prefilter, relaxation and the reference job of one campaign."""
    from smoacs_flows.campaign import load_campaign
    from smoacs_flows.makers import stages
    from smoacs_flows.makers.settings import stage_settings
    from smoacs_flows.makers.stages_sun import reference_energies
    from smoacs_flows.smoacs.propose import ProposalRun

    camp = load_campaign(path)
    st = stage_settings(camp).screening.model_dump()
    records = ProposalRun(camp).run().records
    pre = stages.prefilter([{"records": records, "counts": {}}], st, camp.policy)
    rel = stages.relax(pre, st)
    ref = reference_energies([rel], st, str(camp.base_dir))
    return ref["prototypes"] or {}


def export(out: Path, only: set[str] | None = None, mlip: str = "chgnet") -> int:
    """Write the prototype documents of the store (this library version) to ``out``: those of
    the systems in ``only`` (the campaigns' own), or every one."""
    from smoacs_flows.io import atomic_write_bytes
    from smoacs_flows.screening.prototype_hull import LIBRARY_VERSION
    from smoacs_flows.screening.references import ReferenceStore

    prefix = f"prototypes-v{LIBRARY_VERSION}:{mlip}:"
    systems: dict[str, dict] = {}
    with ReferenceStore() as store:
        for doc in store.mlip.query({"key": {"$regex": f"^{prefix}"}}):
            if only is None or doc["chemsys"] in only:
                systems[doc["chemsys"]] = doc["results"]
    body = {
        "mlip": mlip,
        "library_version": LIBRARY_VERSION,
        "built_by": "scripts/build_hull_cache.py",
        "systems": dict(sorted(systems.items())),
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    atomic_write_bytes(out, gzip.compress(data, mtime=0))
    out.chmod(0o644)  # package data
    return len(systems)


def main(argv: list[str] | None = None) -> int:
    """Run the campaigns and export the cache."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("campaigns", nargs="*", type=Path)
    p.add_argument("--home", type=Path, default=Path("/tmp/smoacs-hull-cache-home"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--export-only", action="store_true", help="export the store as it is")
    p.add_argument(
        "--reuse-shipped",
        action="store_true",
        help="copy the cache that ships now into the store first, so only systems it lacks are "
        "relaxed (the same phases and energies, when the library version is unchanged)",
    )
    args = p.parse_args(argv)
    os.environ["SMOACS_HOME"] = str(args.home)
    os.environ.pop("MP_API_KEY", None)  # the offline default: elements + prototype phases
    from smoacs_flows.screening import prototype_hull

    if args.reuse_shipped:
        from smoacs_flows.screening.references import ReferenceStore

        old = prototype_hull.shipped_cache("chgnet")
        with ReferenceStore() as store:
            for cs, results in old.items():
                store.put_raw(prototype_hull._store_key("chgnet", cs), "chgnet", cs, results)
        print(f"seeded the store with the {len(old)} shipped systems", flush=True)
    prototype_hull.shipped_cache = lambda mlip: {}  # build from the store, not the old file
    t0 = time.process_time()
    used: set[str] = set()
    for c in [] if args.export_only else args.campaigns:
        info = run_campaign(c)
        used.update(info.get("systems", []))
        print(
            f"{c}: {info.get('n_phases')} phases in {len(info.get('systems', []))} systems "
            f"({info.get('counts')})",
            flush=True,
        )
    n = export(args.out, None if args.export_only else used)
    print(
        f"wrote {n} systems to {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, "
        f"{time.process_time() - t0:.0f} CPU s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
