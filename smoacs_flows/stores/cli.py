"""``smoacs-flows query``, ``status``, ``resume`` and ``report``.

Each reads the campaign's LaunchPad (embedded by default, ``--launchpad my_launchpad.yaml`` on
a cluster) and results store (``--results`` YAML or ``$SMOACS_RESULTS_STORE``; embedded
montydb by default), and brings the candidates collection up to date first (the builder is
incremental: cheap when nothing changed; ``--no-update`` skips it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from smoacs_flows.cli_types import count, count0, finite, non_negative
from smoacs_flows.errors import SmoacsError
from smoacs_flows.makers.discovery import LAUNCHPAD_HELP
from smoacs_flows.stores.cli_checks import _check_numbers, _no_home, _tag

TABLE_COLUMNS = [
    ("candidate_id", "candidate"),
    ("formula", "formula"),
    ("nelements", "n_el"),
    ("state", "state"),
    ("stage", "stage"),
    ("e_above_hull", "E_hull"),
    ("spacegroup", "SG"),
    ("verdict", "verdict"),
    ("polarisation", "P(E_F)"),
    ("moment_per_fu", "μB/f.u."),
    ("chgnet_moment", "CHGNet Σ|m|"),
]


def _common(p: argparse.ArgumentParser, update: bool = True) -> None:
    p.add_argument("--launchpad", default=None, help=LAUNCHPAD_HELP)
    p.add_argument(
        "--store", default=None, help="JobStore YAML (default: embedded / $SMOACS_JOB_STORE)"
    )
    p.add_argument(
        "--results",
        default=None,
        help="results-store YAML (default: embedded / $SMOACS_RESULTS_STORE)",
    )
    if update:
        p.add_argument(
            "--no-update", action="store_true", help="do not run the candidates builder first"
        )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="leave out the LaunchPad / JobStore / results-store lines on stderr",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the results commands."""
    q = subparsers.add_parser(
        "query",
        help="query the candidates of the results store",
        description="Filter, sort and export candidates (latest version of each campaign "
        "unless --version). Example: half-metals within 0.1 eV/atom of the hull, no Co, at "
        "most four elements: query --verdict half_metal --e-hull-max 0.1 --exclude Co "
        "--max-elements 4",
    )
    q.add_argument("--campaign", default=None)
    q.add_argument("--version", type=count, default=None)
    q.add_argument("--verdict", default=None, help="half_metal, near_half_metal, ...")
    q.add_argument("--e-hull-max", type=finite, default=None, help="MLIP E_hull, eV/atom")
    q.add_argument("--include", default=None, help="elements every match contains: Fe,Mn")
    q.add_argument("--exclude", default=None, help="elements no match contains: Co,Ni")
    q.add_argument("--max-elements", type=count, default=None)
    q.add_argument("--polarisation-min", type=finite, default=None, help="|P(E_F)| minimum")
    q.add_argument("--moment-min", type=finite, default=None, help="μB per formula unit")
    q.add_argument("--moment-max", type=finite, default=None)
    q.add_argument(
        "--chgnet-moment-min",
        type=non_negative,
        default=None,
        help="CHGNet Σ|m_i| of the relaxed structure, μB per formula unit",
    )
    q.add_argument("--chgnet-moment-max", type=non_negative, default=None)
    q.add_argument(
        "--formula", default=None, help="by reduced formula: Fe4As2 and Fe2As find Fe2As"
    )
    q.add_argument(
        "--spacegroup",
        default=None,
        metavar="SG",
        help="space group of the relaxed structure: a number (225) or a Hermann-Mauguin "
        "symbol (Fm-3m)",
    )
    for flag in ("stable", "unique", "novel", "sun"):
        q.add_argument(f"--{flag}", action="store_true", help=f"only {flag} candidates")
    q.add_argument("--state", default=None, help="pending | failed | done")
    q.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="FIELD<=VALUE (also <, >, >=, =, !=; =a|b for any of); repeatable",
    )
    q.add_argument("--sort", default="e_above_hull", help="field to sort by (default E_hull)")
    q.add_argument("--desc", action="store_true", help="sort descending")
    q.add_argument("--limit", type=count0, default=50, help="at most this many (0: all)")
    q.add_argument("--format", choices=["table", "json", "csv", "cif"], default="table")
    q.add_argument("--out", default=None, help="file (json/csv) or folder (cif)")
    q.add_argument("--force", action="store_true", help="replace an existing --out folder")
    _common(q)
    q.set_defaults(func=_query)

    s = subparsers.add_parser(
        "status",
        help="fireworks per stage and the funnel so far",
        description="Counts of READY / RUNNING / COMPLETED / FIZZLED / "
        "lost fireworks per stage, and the candidate funnel so far.",
    )
    s.add_argument("campaign")
    s.add_argument("--version", type=count, default=None, help="default: the latest")
    s.add_argument(
        "--lost-after",
        type=non_negative,
        default=None,
        help="seconds without heartbeat after which RUNNING is lost (default 4 h)",
    )
    s.add_argument("--json", action="store_true")
    _common(s)
    s.set_defaults(func=_status)

    r = subparsers.add_parser(
        "resume",
        help="rerun FIZZLED and lost fireworks of a campaign, optionally with fixes",
        description="Show why each FIZZLED or lost firework failed and rerun it (and only what "
        "waits on it); overrides apply to those fireworks only. Completed work is never "
        "recomputed.",
    )
    r.add_argument("campaign")
    r.add_argument("--version", type=count, default=None)
    r.add_argument(
        "--stage",
        action="append",
        default=None,
        help="only these stages (propose, prefilter, relax, sun, dft, summary)",
    )
    r.add_argument("--fw", type=int, action="append", default=None, help="only these fw ids")
    r.add_argument("--incar", default=None, help="VASP INCAR overrides: ALGO=All,NELM=200")
    r.add_argument("--max-errors", type=count0, default=None, help="custodian max_errors (VASP)")
    r.add_argument("--gpaw", default=None, help="GPAW setting overrides: maxiter=300")
    r.add_argument(
        "--walltime",
        default=None,
        help="queue walltime for the reruns: minutes (90), H:MM:SS or D-HH:MM:SS; written as "
        "HH:MM:SS, which SLURM and PBS both read",
    )
    r.add_argument(
        "--cores",
        type=count,
        default=None,
        help="cores per node for the reruns (SLURM cpus_per_task, or ntasks for VASP; PBS "
        "ppn / ncpus, mpiprocs for VASP)",
    )
    r.add_argument("--nodes", type=count, default=None, help="nodes for the reruns")
    r.add_argument("--category", default=None, help="send the reruns to this worker category")
    r.add_argument(
        "--lost-after",
        type=non_negative,
        default=None,
        help="seconds without heartbeat after which RUNNING is lost (default 4 h)",
    )
    r.add_argument("--dry-run", action="store_true", help="list what would rerun; change nothing")
    r.add_argument(
        "--run",
        action="store_true",
        help="embedded LaunchPad: run local workers until the campaign is done",
    )
    r.add_argument(
        "--defused",
        action="store_true",
        help="also reignite the campaign's DEFUSED fireworks and resume its PAUSED ones "
        "(lpad defuse_fws / pause_fws)",
    )
    r.add_argument("--launchpad", default=None, help=LAUNCHPAD_HELP)
    r.set_defaults(func=_resume)

    p = subparsers.add_parser("report", help="self-contained HTML report of a campaign")
    p.add_argument("campaign")
    p.add_argument("--out", required=True, help="HTML file")
    p.add_argument("--version", type=count, default=None)
    p.add_argument(
        "--compare",
        default=None,
        help="another campaign to compare element frequencies with (e.g. the same "
        "campaign without exclusion masks)",
    )
    _common(p)
    p.set_defaults(func=_report)

    b = subparsers.add_parser(
        "builder",
        help="write the candidates builder as JSON for maggma's mrun",
        description="Write the incremental candidates builder (the JobStore, results store "
        "and LaunchPad resolved as the other commands resolve them) to a JSON file that "
        "maggma's `mrun FILE` runs, e.g. from cron. The file holds the stores' settings, "
        "credentials included: it is written with mode 600.",
    )
    b.add_argument("out", help="builder JSON file to write")
    _common(b, update=False)
    b.set_defaults(func=_builder)


# ----------------------------------------------------------------------------- helpers


def _csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def results_why(source: str | None) -> str:
    """Why the results store is the one it is (``--results``, the variable, or the default)."""
    import os

    from smoacs_flows.stores.results import RESULTS_STORE_ENV

    if source:
        return "(--results)"
    if os.environ.get(RESULTS_STORE_ENV):
        return f"({RESULTS_STORE_ENV})"
    return f"(default: no --results or {RESULTS_STORE_ENV})"


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(launchpad, job store, results store) from the common options; one line on stderr
    for each saying which and why."""
    from smoacs_flows.makers.discovery import announce
    from smoacs_flows.makers.launchpad import resolve_launchpad
    from smoacs_flows.stores.jobstore import resolve_job_store
    from smoacs_flows.stores.results import load_results_store

    say = (lambda line: None) if getattr(args, "quiet", False) else announce
    results = load_results_store(args.results).connect()
    lp, line = resolve_launchpad(args.launchpad)
    say(line)
    job_store, _, line = resolve_job_store(getattr(args, "store", None))
    say(line)
    say(f"results store: {results.where} {results_why(args.results)}")
    return lp, job_store, results


def _update(args: argparse.Namespace, lp: Any, job_store: Any, results: Any) -> None:
    from smoacs_flows.stores.results import update_results

    if not getattr(args, "no_update", False):
        update_results(results, job_store, lp)


def _resume(args: argparse.Namespace) -> int:
    from smoacs_flows.stores.cli_resume import resume_command

    return resume_command(args)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


# ----------------------------------------------------------------------------- query


def _query(args: argparse.Namespace) -> int:
    from smoacs_flows.io import check_output_dir, check_output_file
    from smoacs_flows.stores.results import query

    _check_numbers(args)
    from smoacs_flows.stores.query import Filter

    for expr in args.where:  # field names and values checked before anything is opened
        Filter().add_where(expr)
    if args.spacegroup is not None:
        from smoacs_flows.stores.query import spacegroup_number

        spacegroup_number(args.spacegroup)
    if args.format == "cif" and not args.out:
        raise SmoacsError("--format cif needs --out FOLDER")
    if args.out:  # refused before anything is opened or built
        if args.format == "cif":
            stores = [args.launchpad, args.store, args.results]
            check_output_dir(args.out, force=args.force, protect=[x for x in stores if x])
        else:
            check_output_file(args.out, user=True)
    why = _no_home(args)
    if why is not None:
        print(f"no candidates: {why}", file=sys.stderr)
        if args.format == "json" and not args.out:
            print("[]")
        return 0
    lp, job_store, results = _open(args)
    _update(args, lp, job_store, results)
    found = query(
        campaign=args.campaign,
        version=args.version,
        verdict=args.verdict,
        e_hull_max=args.e_hull_max,
        include=_csv_list(args.include),
        exclude=_csv_list(args.exclude),
        max_elements=args.max_elements,
        polarisation_min=args.polarisation_min,
        moment_min=args.moment_min,
        moment_max=args.moment_max,
        chgnet_moment_min=args.chgnet_moment_min,
        chgnet_moment_max=args.chgnet_moment_max,
        formula=args.formula,
        spacegroup=args.spacegroup,
        stable=args.stable or None,
        unique=args.unique or None,
        novel=args.novel or None,
        sun=args.sun or None,
        state=args.state,
        where=args.where,
        sort=args.sort,
        descending=args.desc,
        limit=args.limit or None,
        results=results,
    )
    rows = [c.summary for c in found]
    if args.format == "cif":
        if not args.out:
            raise SmoacsError("--format cif needs --out FOLDER")
        from pymatgen.io.cif import CifWriter

        from smoacs_flows.io import atomic_output_dir

        with atomic_output_dir(args.out, force=args.force) as tmp:
            for c in found:
                if c.structure is not None:
                    CifWriter(c.structure).write_file(tmp / f"{c.candidate_id}.cif")
        print(f"wrote {sum(c.structure is not None for c in found)} CIF files to {args.out}")
        return 0
    if args.format == "json":
        text = json.dumps(rows, indent=1)
    elif args.format == "csv":
        buf = io.StringIO()
        cols = [k for k in rows[0] if k != "elements"] + ["elements"] if rows else ["candidate_id"]
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "elements": " ".join(r.get("elements") or [])})
        text = buf.getvalue()
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{len(rows)} candidate(s)")
        for _, head in TABLE_COLUMNS:
            t.add_column(head)
        for r in rows:
            t.add_row(*[_fmt(r.get(k)) for k, _ in TABLE_COLUMNS])
        Console(width=160).print(t)
        for h in sorted({r["hull"] for r in rows if r.get("hull")}):
            print(f"E_hull against: {h}")
        return 0
    if args.out:
        from smoacs_flows.io import atomic_write_bytes

        atomic_write_bytes(args.out, text.encode())
        print(f"wrote {len(rows)} candidate(s) to {args.out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


# ----------------------------------------------------------------------------- status


def campaign_status(
    lp: Any, results: Any, campaign: str, version: int, tag: str, lost_after: float | None = None
) -> dict[str, Any]:
    """Fireworks per stage and state (``LOST`` counted apart from RUNNING) and the funnel."""
    from smoacs_flows.makers.launchpad import lp_session
    from smoacs_flows.makers.recovery import LOST_AFTER, find_failed, held_fireworks
    from smoacs_flows.makers.run import stage_counts
    from smoacs_flows.stores import report_docs
    from smoacs_flows.stores.candidates import FUNNEL

    counts = stage_counts(lp, tag)
    with lp_session(lp, write=False):
        after = LOST_AFTER if lost_after is None else lost_after
        lost = [f for f in find_failed(lp, tag, after) if f.state == "LOST"]
    for f in lost:
        c = counts.setdefault(f.stage, {})
        c["RUNNING"] = c.get("RUNNING", 0) - 1
        c["LOST"] = c.get("LOST", 0) + 1
    funnel: dict[str, int | None] = {s: 0 for s in FUNNEL}
    n_hm, hull = 0, False
    with results.reading():
        docs = list(
            results.candidates.query(
                {"campaign": campaign, "version": version},
                properties=["stage", "dft.verdict", "e_above_hull", "hull", "sun"],
            )
        )
    hulls: set[str] = set()
    for d in docs:
        for s in FUNNEL[: FUNNEL.index(d["stage"]) + 1]:
            funnel[s] += 1
        n_hm += (d.get("dft") or {}).get("verdict") == "half_metal"
        hull = hull or d.get("e_above_hull") is not None
        if d.get("hull"):
            hulls.add(d["hull"])
    if not hull:
        funnel["stable"] = None  # no reference phases: stability not evaluated
    funnel["half_metal"] = n_hm
    return {
        "campaign": campaign,
        "version": version,
        "fireworks": counts,
        "funnel": funnel,
        "sun_label": report_docs.sun_step_label(docs),
        "hull": sorted(hulls),
        "lost": [f.__dict__ for f in lost],
        "held": held_fireworks(lp, tag),
    }


def _status(args: argparse.Namespace) -> int:
    from smoacs_flows.makers.core import STAGES

    _check_numbers(args)
    why = _no_home(args)
    if why is not None:
        raise SmoacsError(f"unknown campaign {args.campaign!r}: {why}")
    lp, job_store, results = _open(args)
    version, tag = _tag(lp, args.campaign, args.version)
    _update(args, lp, job_store, results)
    st = campaign_status(lp, results, args.campaign, version, tag, args.lost_after)
    if args.json:
        print(json.dumps(st, indent=1, default=str))
        return 0
    states = ["WAITING", "READY", "RESERVED", "RUNNING", "LOST", "COMPLETED", "FIZZLED"]
    held = {s for c in st["fireworks"].values() for s in ("PAUSED", "DEFUSED") if c.get(s)}
    states += sorted(held)  # a person's `lpad defuse_fws` / `pause_fws`: shown, not hidden
    print(f"campaign {args.campaign} v{version} ({tag})")
    print(f"{'stage':<10}" + "".join(f"{s:>10}" for s in states))
    for stage in [*STAGES, *sorted(set(st["fireworks"]) - set(STAGES))]:
        c = st["fireworks"].get(stage)
        if c:
            print(f"{stage:<10}" + "".join(f"{c.get(s, 0):>10}" for s in states))
    names = {"sun": st["sun_label"], "half_metal": "half-metal"}
    print(
        "funnel: "
        + " → ".join(
            f"{names.get(k, k)} {'n/a' if v is None else v}" for k, v in st["funnel"].items()
        )
    )
    for h in st["hull"]:
        print(f"hull: {h}")
    for f in st["lost"]:
        print(f"lost: {f['name']} (fw {f['fw_id']}): {f['reason']}")
    for f in st["held"]:
        print(f"held: {f['name']} (fw {f['fw_id']}) is {f['state']}; resume --defused releases it")
    return 0


# ----------------------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    from smoacs_flows.io import check_output_file
    from smoacs_flows.stores.report_data import report_for_campaign

    check_output_file(args.out, user=True)  # refused before anything is opened or built
    lp, job_store, results = _open(args)
    version, _ = _tag(lp, args.campaign, args.version)
    _update(args, lp, job_store, results)
    path = report_for_campaign(
        results, job_store, lp, args.campaign, version, args.out, compare=args.compare
    )
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- builder


def _builder(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from monty.json import MontyEncoder

    from smoacs_flows.io import atomic_write_bytes
    from smoacs_flows.makers.discovery import announce, find_launchpad_file
    from smoacs_flows.makers.launchpad import embedded_launchpad_path
    from smoacs_flows.stores.jobstore import resolve_job_store
    from smoacs_flows.stores.results import load_results_store

    results = load_results_store(args.results)
    job_store, _, line = resolve_job_store(args.store)
    announce(line)
    found = find_launchpad_file(args.launchpad)
    if found.path is not None and not Path(found.path).is_file():
        raise SmoacsError(f"--launchpad {found.path}: no such file")
    # the LaunchPad by its file (no credentials copied), or the embedded one by its path
    lp: Any = (
        str(Path(found.path).resolve())
        if found.path
        else {"embedded": str(embedded_launchpad_path().resolve())}
    )
    announce(f"LaunchPad: {lp} ({found.why})")
    text = json.dumps(results.builder(job_store, lp).as_dict(), cls=MontyEncoder, indent=1)
    out = Path(args.out)
    atomic_write_bytes(out, text.encode())
    os.chmod(out, 0o600)
    print(f"wrote {out}: run `mrun {out}` to bring the candidates collection up to date")
    return 0
