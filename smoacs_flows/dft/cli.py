"""``smoacs-flows dft run|analyze``: run one candidate or classify existing DFT outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from smoacs_flows.cli_types import count, count0, fraction, non_negative, positive
from smoacs_flows.dft.analysis import AnalysisSettings
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dft`` command with ``run`` and ``analyze`` sub-commands."""
    p = subparsers.add_parser("dft", help="DFT validation (GPAW or VASP) and half-metal verdicts")
    sub = p.add_subparsers(dest="dft_command", metavar="SUBCOMMAND")

    run = sub.add_parser("run", help="run one candidate through GPAW or the atomate2 VASP chain")
    run.add_argument("structure", help="candidate structure (CIF, POSCAR or pymatgen JSON)")
    run.add_argument("--engine", choices=["gpaw", "vasp"], default="gpaw")
    run.add_argument("--out", default=None, help="output directory (default: dft-<structure name>)")
    run.add_argument("--force", action="store_true", help="replace an existing --out")
    run.add_argument("--relax", action="store_true", help="GPAW: relax positions and cell first")
    run.add_argument("--ecut", type=positive, default=None, help="GPAW plane-wave cutoff (eV)")
    run.add_argument(
        "--kpoint-density", type=positive, default=None, help="GPAW SCF k-points per Å^-1"
    )
    run.add_argument(
        "--dense-kpoint-density", type=positive, default=None, help="GPAW non-SCF k-points per Å^-1"
    )
    run.add_argument("--vasp-cmd", default=None, help="VASP command (else atomate2 settings)")
    run.add_argument("--max-errors", type=count0, default=5, help="VASP: custodian max errors")
    run.add_argument("--wall-time", type=count, default=None, help="VASP: wall time, seconds")
    _analysis_args(run)
    run.set_defaults(func=_run)

    ana = sub.add_parser("analyze", help="classify a VASP dir / vasprun.xml[.gz] / GPAW result")
    ana.add_argument("path", help="VASP directory, vasprun.xml[.gz], or a GPAW result .json")
    ana.add_argument("--plot", default=None, help="write the spin-resolved DOS PNG here")
    _analysis_args(ana)
    ana.set_defaults(func=_analyze)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--min-gap", type=non_negative, default=None, help="smallest spin gap, eV (0.1)")
    p.add_argument(
        "--near-hm", type=fraction, default=None, help="|P| threshold for near_half_metal (0.9)"
    )


def _settings(args: argparse.Namespace) -> AnalysisSettings:
    kw = {}
    if args.min_gap is not None:
        kw["min_gap"] = args.min_gap
    if args.near_hm is not None:
        kw["near_half_metal_polarisation"] = args.near_hm
    try:
        return AnalysisSettings(**kw)
    except ValidationError as exc:
        err = exc.errors()[0]
        opt = {"min_gap": "--min-gap", "near_half_metal_polarisation": "--near-hm"}
        name = opt.get(str(err["loc"][0]) if err["loc"] else "", "analysis settings")
        raise InputError(f"{name}: {err['msg']}") from None


def analyse_path(path: str | Path, settings: AnalysisSettings | None = None) -> DFTResult:
    """Classify existing outputs: a VASP dir, a vasprun.xml[.gz], or a GPAW/DFT result JSON."""
    from smoacs_flows.dft.analysis import analyse_spin_channels

    path = Path(path)
    settings = settings or AnalysisSettings()
    if path.is_file() and path.suffix == ".json":
        result = DFTResult.read(path)
        if result.spin_polarised and (result.eigenvalues or result.dos is not None):
            n_k = len(result.eigenvalues["up"]) if result.eigenvalues else None
            result.analysis = analyse_spin_channels(
                result.efermi,
                eigenvalues=result.eigenvalues,
                dos=result.dos,
                total_moment=result.total_moment,
                n_formula_units=result.n_formula_units,
                site_moments=result.site_moments,
                n_kpoints=n_k,
                settings=settings,
            )
        else:
            result.analysis = analyse_spin_channels(
                result.efermi,
                total_moment=result.total_moment,
                n_formula_units=result.n_formula_units,
                settings=settings,
            )
        return result
    from smoacs_flows.dft.vasp import parse_vasp_output

    return parse_vasp_output(path, settings)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def print_table(results: list[DFTResult], file=None) -> None:
    """The verdict table: verdict, P at E_F, per-spin gaps, half-metallic gap, moments."""
    file = file or sys.stdout
    head = (
        "formula",
        "engine",
        "verdict",
        "P(E_F)",
        "gap↑ eV",
        "gap↓ eV",
        "HM gap eV",
        "μB/cell",
        "μB/f.u.",
    )
    rows = []
    for r in results:
        s = r.summary()
        rows.append(
            (
                s["formula"],
                s["engine"],
                s["verdict"] or "—",
                _fmt(s["polarisation"]),
                _fmt(s["gap_up"]),
                _fmt(s["gap_down"]),
                _fmt(s["half_metallic_gap"]),
                _fmt(s["total_moment"]),
                _fmt(s["moment_per_fu"]),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)), file=file)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)), file=file)
    for r in results:
        for w in r.analysis.warnings if r.analysis else []:
            print(f"warning ({r.reduced_formula}): {w}", file=file)


def _emit(result: DFTResult, as_json: bool) -> None:
    if as_json:
        out = result.summary()
        out["gaps"] = (
            {k: v.model_dump() for k, v in result.analysis.gaps.items()} if result.analysis else {}
        )
        out["dos_at_ef"] = result.analysis.dos_at_ef if result.analysis else {}
        out["site_moments"] = result.site_moments
        out["source"] = result.source
        out["hull"] = result.hull
        print(json.dumps(out, indent=2))
    else:
        print_table([result])


def _analyze(args: argparse.Namespace) -> int:
    result = analyse_path(args.path, _settings(args))
    if args.plot:
        from smoacs_flows.dft.plot import plot_spin_dos

        plot_spin_dos(result, args.plot)
    _emit(result, args.json)
    return 0


#: most sites ``dft run`` gives the GPAW engine (a 1,008-atom cell ran for hours)
MAX_GPAW_SITES = 200


def _run(args: argparse.Namespace) -> int:
    from smoacs_flows.dft.plot import plot_spin_dos
    from smoacs_flows.dft.structures import read_structure
    from smoacs_flows.io import atomic_output_dir

    settings = _settings(args)
    structure = read_structure(args.structure)
    out = Path(args.out or f"dft-{Path(args.structure).stem}")
    if args.engine == "vasp":
        from smoacs_flows.dft.vasp import VaspChainSettings, configured_vasp_cmd, run_vasp_chain

        cmd = configured_vasp_cmd(args.vasp_cmd)  # says how to configure VASP when absent
        vs = VaspChainSettings(vasp_cmd=cmd, max_errors=args.max_errors, wall_time=args.wall_time)
        # VASP job folders are scratch kept beside the output (custodian logs on failure)
        jobs_dir = out.with_name(out.name + "-vasp-jobs")
        with atomic_output_dir(out, force=args.force) as tmp:
            result = run_vasp_chain(structure, jobs_dir, vs, settings)
            result.write(tmp / "result.json")
            plot_spin_dos(result, tmp / "dos.png")
    else:
        from smoacs_flows.dft.gpaw_engine import GPAWSettings, run_gpaw

        if len(structure) > MAX_GPAW_SITES:  # GPAW on one machine: would run for days
            raise InputError(
                f"{args.structure}: {len(structure)} sites; the GPAW engine takes at most "
                f"{MAX_GPAW_SITES} (use the primitive cell, or --engine vasp on a cluster)"
            )
        kw = {"relax": args.relax}
        for name in ("ecut", "kpoint_density", "dense_kpoint_density"):
            if getattr(args, name) is not None:
                kw[name] = getattr(args, name)
        try:
            gs = GPAWSettings(**kw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
        with atomic_output_dir(out, force=args.force) as tmp:
            result = run_gpaw(structure, gs, settings, work_dir=tmp / "gpaw")
            result.source = str(Path(args.structure))
            result.write(tmp / "result.json")
            plot_spin_dos(result, tmp / "dos.png")
    _emit(result, args.json)
    if not args.json:
        print(f"wrote {out}/result.json and {out}/dos.png")
    return 0
