"""``smoacs-flows screen`` and ``smoacs-flows refs {fetch,load}``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from smoacs_flows.cli_types import count, non_negative, positive
from smoacs_flows.errors import InputError
from smoacs_flows.screening.methods import (
    DEFAULT_METHOD,
    DEFAULT_OPTIMIZER,
    METHODS,
    OPTIMIZER_NAMES,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``screen`` and ``refs`` commands."""
    p = subparsers.add_parser(
        "screen",
        help="prefilter, MLIP-relax and S.U.N.-screen candidates",
        description="Screen candidates: prefilter, MLIP relaxation, stability against reference "
        "phases, uniqueness and novelty. Writes DIR/survivors.jsonl, DIR/cif/<id>.cif and "
        "DIR/funnel.json (atomically) and prints the funnel.",
    )
    p.add_argument("input", help="proposals.jsonl (from `propose`) or a folder of CIFs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--refs",
        default="mp-or-elements",
        help="reference entries: 'mp-or-elements' (the default, as in campaigns: Materials "
        "Project phases with MP_API_KEY, else the shipped MP elemental references, joined "
        "offline by MLIP-relaxed prototype phases), 'mp-elements', 'store' (the entries "
        "cached by `refs fetch/load`), a JSON(.gz) file of ComputedEntries, or 'none' "
        "(stability and novelty not evaluated)",
    )
    p.add_argument(
        "--prototype-phases",
        default="auto",
        choices=["auto", "on", "off"],
        help="add MLIP-relaxed prototype phases (26 structure types + elemental structures, "
        "decorated per chemical system, cached in the reference store) to the hull; auto: "
        "on when the references are the elements only",
    )
    p.add_argument(
        "--novelty-refs",
        default=None,
        help="your own known structures (a folder of CIFs or a proposals-style JSONL): a "
        "candidate matching one is not novel",
    )
    p.add_argument(
        "--mlip",
        default="chgnet",
        choices=["chgnet", "mattersim", "none"],
        help="MLIP for relaxation (none: structures are already relaxed)",
    )
    p.add_argument("--e-hull-max", type=non_negative, default=0.1, help="eV/atom (default 0.1)")
    p.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help="relaxation path (default: torchsim, torch-sim's batched FIRE; batched: ours, "
        "lockstep ASE optimisers, also BFGS; atomate2: ForceFieldRelaxMaker per structure)",
    )
    p.add_argument("--fmax", type=positive, default=0.01, help="eV/Å (default 0.01)")
    p.add_argument("--steps", type=count, default=500, help="optimiser step cap (default 500)")
    p.add_argument("--optimizer", default=DEFAULT_OPTIMIZER, choices=OPTIMIZER_NAMES)
    p.add_argument(
        "--gap-max",
        type=non_negative,
        default=None,
        help="prefilter: predicted band gap ≤ this (eV); off by default",
    )
    p.add_argument("--max-elements", type=count, default=5)
    p.add_argument("--min-distance", type=non_negative, default=0.5, help="Å (default 0.5)")
    p.add_argument(
        "--policy",
        default="ionic",
        help="neutrality policy: ionic | ionic+metallic | table path | off",
    )
    p.add_argument(
        "--no-relax-refs",
        action="store_true",
        help="use reference DFT energies instead of relaxing references with the MLIP",
    )
    p.add_argument(
        "--jobs", type=count, default=min(2, os.cpu_count() or 1), help="processes for matching"
    )
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_screen)

    r = subparsers.add_parser("refs", help="reference phases: fetch or load into the store")
    rs = r.add_subparsers(dest="refs_command", metavar="ACTION", required=True)
    f = rs.add_parser("fetch", help="download competing phases (MP or Alexandria)")
    f.add_argument("--source", required=True, choices=["mp", "alexandria"])
    f.add_argument("--chemsys", required=True, nargs="+", help="e.g. Fe-Mn-Sb Co-Mn-Si")
    f.set_defaults(func=_refs_fetch)
    ld = rs.add_parser("load", help="import a JSON(.gz) list of ComputedEntries (offline)")
    ld.add_argument("file")
    ld.add_argument("--source", default="file", help="provenance label (default: file)")
    ld.set_defaults(func=_refs_load)


def _progress_factory():
    from tqdm import tqdm

    bars = []

    def make(stage: str, total: int):
        b = tqdm(
            total=total,
            desc=stage,
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty() and os.environ.get("SMOACS_PROGRESS") != "1",
        )
        bars.append(b)
        return b.update

    return make, bars


def _screen(args: argparse.Namespace) -> int:
    from smoacs_flows.screening.pipeline import (
        ScreenConfig,
        load_candidates,
        load_references,
        screen,
        write_outputs,
    )
    from smoacs_flows.screening.prefilter import PrefilterConfig

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise InputError(f"output directory {out} exists and is not empty (use --force)")
    policy = None if args.policy == "off" else args.policy
    cfg = ScreenConfig(
        prefilter=PrefilterConfig(
            band_gap_max=args.gap_max,
            max_elements=args.max_elements,
            min_distance=args.min_distance,
            neutrality_policy=policy,
        ),
        mlip=args.mlip,
        method=args.method or DEFAULT_METHOD,
        fmax=args.fmax,
        steps=args.steps,
        optimizer=args.optimizer,
        e_hull_max=args.e_hull_max,
        n_jobs=max(1, args.jobs),
        relax_references=not args.no_relax_refs,
        novelty_references=args.novelty_refs,
    )
    records = load_candidates(args.input)
    store = None
    refs = None
    if args.refs != "none":
        from smoacs_flows.makers.stages_sun import reference_label
        from smoacs_flows.screening.builtin_refs import KEYWORDS, LABEL_ELEMENTS
        from smoacs_flows.screening.references import ReferenceStore, entry_chemsys

        cfg.reference_label = reference_label(args.refs)
        cfg.prototype_phases = args.prototype_phases == "on" or (
            args.prototype_phases == "auto" and cfg.reference_label == LABEL_ELEMENTS
        )
        store = ReferenceStore()
        if args.refs in KEYWORDS:
            from smoacs_flows.screening.builtin_refs import keyword_references

            systems = {
                "-".join(sorted(el.symbol for el in r["_structure"].composition)) for r in records
            }
            refs, cfg.reference_label = keyword_references(args.refs, systems)
            cfg.prototype_phases = args.prototype_phases == "on" or (
                args.prototype_phases == "auto" and cfg.reference_label == LABEL_ELEMENTS
            )
        elif args.refs == "store":
            systems = sorted(
                {"-".join(sorted(el.symbol for el in r["_structure"].composition)) for r in records}
            )
            refs = [e for cs in systems for e in store.get(cs)]
            uniq = {id(e): e for e in refs}  # subsystems shared between candidates
            refs = list({(entry_chemsys(e), e.entry_id): e for e in uniq.values()}.values())
            if not refs:
                raise InputError(
                    "the reference store has no entries for "
                    f"{', '.join(systems[:5])}; run `smoacs-flows refs fetch/load`"
                )
        else:
            try:
                refs = load_references(args.refs)
            except InputError as exc:
                raise InputError(f"--refs: {exc}") from None
    make, bars = _progress_factory()
    try:
        with warnings.catch_warnings():  # pymatgen/torch chatter per entry; the funnel reports
            warnings.simplefilter("ignore")
            survivors, funnel = screen(records, refs, cfg, store=store, progress=make)
    finally:
        for b in bars:
            b.close()
        if store is not None:
            store.close()
    write_outputs(out, survivors, funnel, force=args.force)
    print(funnel.table())
    for n in funnel.notes:
        print(f"note: {n}")
    print(
        f"{funnel.sun_label}: {len(survivors)} of {len(records)} candidates → "
        f"{out}/survivors.jsonl (every candidate's record: {out}/screened.jsonl)"
    )
    return 0


def _refs_fetch(args: argparse.Namespace) -> int:
    from smoacs_flows.screening.references import fetch

    added = fetch(args.source, args.chemsys)
    print(f"{sum(added.values())} new {args.source} entries in {len(added)} chemical systems")
    return 0


def _refs_load(args: argparse.Namespace) -> int:
    from smoacs_flows.screening.references import load_file

    added = load_file(args.file, source=args.source)
    print(f"{sum(added.values())} new entries in {len(added)} chemical systems from {args.file}")
    return 0
