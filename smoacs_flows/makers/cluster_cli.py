"""``smoacs-flows launchers init``, ``config``, and FireWorks' own ``lpad`` / ``rlaunch`` /
``qlaunch`` on the resolved LaunchPad."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``launchers``, ``config``, ``lpad``, ``rlaunch`` and ``qlaunch`` commands."""
    lau = subparsers.add_parser("launchers", help="FireWorks configuration folders")
    lsub = lau.add_subparsers(dest="launchers_command", metavar="ACTION")
    i = lsub.add_parser(
        "init",
        help="write a FireWorks config folder (atomate2's layout) for the gpu/cpu/vasp queues",
        description="Write DIR with FW_config.yaml, my_launchpad.yaml, my_fworker_{gpu,cpu,"
        "vasp}.yaml, my_qadapter_{gpu,cpu,vasp}.yaml (absolute paths, rlaunch singleshot so "
        "qlaunch -r works), jobflow.yaml (JOB_STORE), one folder per queue with FireWorks' "
        "standard names (qlaunch -c DIR/gpu) and, for PBS, the queue templates "
        "(templates/). Then: export FW_CONFIG_FILE=DIR/FW_config.yaml "
        "JOBFLOW_CONFIG_FILE=DIR/jobflow.yaml.",
    )
    i.add_argument("dir", help="the folder to write (its parent must exist)")
    i.add_argument("--launchpad", default=None, help="copy this my_launchpad.yaml")
    i.add_argument(
        "--embedded", action="store_true", help="the embedded LaunchPad and JobStore ($SMOACS_HOME)"
    )
    i.add_argument("--store", default=None, help="JobStore YAML for jobflow.yaml's JOB_STORE")
    i.add_argument("--scheduler", default="slurm", help="slurm (default) or pbs")
    i.add_argument(
        "--pbs-flavour",
        default="pro",
        help="with --scheduler pbs: pro (PBS Pro / OpenPBS: -l select=1:ncpus=N:mpiprocs=M"
        "(:ngpus=G):mem=X, the default) or torque (-l nodes=1:ppn=N(:gpus=G))",
    )
    i.add_argument(
        "--walltime",
        default=None,
        help="walltimes per queue, e.g. gpu=4:00:00,vasp=2-00:00:00 ([D-]HH:MM:SS or whole "
        "minutes; written HH:MM:SS; defaults gpu 4 h, cpu 12 h, vasp 24 h)",
    )
    i.add_argument(
        "--cpu-multi",
        action="store_true",
        help="cpu queue jobs run FireWorks' `rlaunch multi N` with N = the job's cores, one "
        "thread each, so every core is busy (launch them with qlaunch without -r; MongoDB "
        "LaunchPads only)",
    )
    i.add_argument(
        "--queues",
        default=None,
        help="queue (partition) names per kind, e.g. gpu=gpu_a100,cpu=short,vasp=mpi (default: "
        "gpu, cpu, vasp); one name per kind keeps qlaunch -m counts apart",
    )
    i.add_argument("--force", action="store_true", help="replace an existing non-empty DIR")
    i.set_defaults(func=_launchers_init)
    lau.set_defaults(func=lambda a: (lau.print_help(), 2)[1])

    c = subparsers.add_parser(
        "config",
        help="the resolved LaunchPad, stores, MLIP weights, VASP and GPAW set-up",
        description="Which LaunchPad, JobStore and results store commands use (and why), the "
        "MLIP weights found, atomate2's VASP command, GPAW, and whether MP_API_KEY is set "
        "(never its value). Opens no database.",
    )
    c.add_argument("--launchpad", default=None, help="my_launchpad.yaml")
    c.add_argument("--store", default=None, help="JobStore YAML")
    c.add_argument("--results", default=None, help="results-store YAML")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_config)

    for tool, what in (
        ("lpad", "FireWorks' lpad (get_wflows, get_fws, rerun_fws, defuse_wflows, ...)"),
        ("rlaunch", "FireWorks' rlaunch (singleshot, rapidfire)"),
        ("qlaunch", "FireWorks' qlaunch (singleshot, rapidfire; -r for reservation mode)"),
    ):
        p = subparsers.add_parser(
            tool,
            help=f"{what} on the resolved LaunchPad, the embedded one included",
            description=f"{what}, with FireWorks' own arguments, on the LaunchPad FireWorks' "
            "configuration names (-l, -c, FW_CONFIG_FILE) or else the embedded one; "
            f"`smoacs-flows {tool} -h` after the command name shows FireWorks' help.",
            add_help=False,
        )
        p.add_argument("args", nargs=argparse.REMAINDER, help=f"{tool} arguments")
        p.set_defaults(func=run_passthrough, tool=tool)


def _launchers_init(args: argparse.Namespace) -> int:
    from smoacs_flows.makers.launchers import init_launchers

    files = init_launchers(
        args.dir,
        args.launchpad,
        args.embedded,
        args.store,
        args.scheduler,
        args.force,
        args.pbs_flavour,
        walltime=args.walltime,
        queues=args.queues,
        cpu_multi=args.cpu_multi,
    )
    folder = next(iter(files.values())).parent
    print(f"wrote {len(files)} files to {folder}:")
    for name in sorted(files):
        print(f"  {name}")
    embedded = "embedded:" in files["my_launchpad.yaml"].read_text()
    qlaunch = "smoacs-flows qlaunch" if embedded else "qlaunch"
    print(
        f"next: export FW_CONFIG_FILE={folder / 'FW_config.yaml'} "
        f"JOBFLOW_CONFIG_FILE={folder / 'jobflow.yaml'}"
    )
    if not embedded and not args.launchpad:
        print("      fill in MongoDB in my_launchpad.yaml and jobflow.yaml (placeholders now)")
    for q in ("gpu", "cpu"):
        print(f"      {qlaunch} -c {folder / q} -r rapidfire --nlaunches infinite")
    return 0


def run_passthrough(args: argparse.Namespace) -> int:
    """Run FireWorks' ``args.tool`` with ``args.args``."""
    from smoacs_flows.makers.fwcli import run_fireworks_tool

    return run_fireworks_tool(args.tool, list(args.args))


# ----------------------------------------------------------------------------- config


def _mlip_weights() -> dict[str, Any]:
    """CHGNet's shipped weights and MatterSim checkpoints found (paths only)."""
    import importlib.util

    out: dict[str, Any] = {}
    spec = importlib.util.find_spec("chgnet")
    chgnet = []
    if spec and spec.origin:
        chgnet = sorted(
            str(p) for p in (Path(spec.origin).parent / "pretrained").glob("*/*.pth.tar")
        )
    out["chgnet"] = chgnet
    ms = []
    env = os.environ.get("SMOACS_MATTERSIM_CHECKPOINT")
    if env and Path(env).expanduser().is_file():
        ms.append(str(Path(env).expanduser()))
    cache = Path.home() / ".local" / "mattersim" / "pretrained_models"
    ms += sorted(str(p) for p in cache.glob("*.pth"))
    out["mattersim"] = ms
    return out


def _vasp() -> dict[str, Any]:
    try:
        from atomate2.settings import Atomate2Settings

        s = Atomate2Settings()
        cmd, gamma = s.VASP_CMD, s.VASP_GAMMA_CMD
    except Exception as exc:  # noqa: BLE001 - a broken ~/.atomate2.yaml is worth showing
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    return {
        "vasp_cmd": cmd,
        "vasp_gamma_cmd": gamma,
        "atomate2_config": os.environ.get("ATOMATE2_CONFIG_FILE") or "~/.atomate2.yaml",
        "potcar_dir_set": bool(os.environ.get("PMG_VASP_PSP_DIR")),
    }


def _gpaw() -> dict[str, Any]:
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("gpaw") is None:
        return {"installed": False}
    try:
        ver = version("gpaw")
    except PackageNotFoundError:
        ver = None
    return {"installed": True, "version": ver}


def config_report(
    launchpad: str | None = None, store: str | None = None, results: str | None = None
) -> dict[str, Any]:
    """Everything ``smoacs-flows config`` shows, as a dict (no secrets, no connections)."""
    from smoacs_flows.config import smoacs_home
    from smoacs_flows.errors import SmoacsError
    from smoacs_flows.makers.discovery import find_launchpad_file, fw_config_file
    from smoacs_flows.makers.launchpad import embedded_launchpad_path, redact

    rep: dict[str, Any] = {"smoacs_home": str(smoacs_home())}
    try:
        rep["fw_config_file"] = str(fw_config_file().path or "") or None
        found = find_launchpad_file(launchpad)
        lp: dict[str, Any] = {"file": str(found.path) if found.path else None, "why": found.why}
        if found.path is None:
            lp.update(kind="embedded", where=str(embedded_launchpad_path()))
        else:
            from smoacs_flows.io import load_yaml

            spec = load_yaml(found.path, "LaunchPad file", SmoacsError) or {}
            if isinstance(spec, dict) and spec.get("embedded"):
                lp.update(kind="embedded", where=os.path.expandvars(str(spec["embedded"])))
            elif isinstance(spec, dict):
                host = redact(str(spec.get("host", "localhost")))
                lp.update(kind="mongodb", where=f"{host}:{spec.get('port')}/{spec.get('name')}")
        rep["launchpad"] = lp
    except SmoacsError as exc:
        rep["launchpad"] = {"error": str(exc)}
    try:
        from smoacs_flows.stores.jobstore import describe_store, resolve_job_store

        js, origin, line = resolve_job_store(store)
        rep["job_store"] = {
            "origin": origin,
            "where": describe_store(js),
            "line": line,
            "jobflow_config_file": os.environ.get("JOBFLOW_CONFIG_FILE"),
        }
    except SmoacsError as exc:
        rep["job_store"] = {"error": str(exc)}
    try:
        from smoacs_flows.stores.cli import results_why
        from smoacs_flows.stores.results import load_results_store

        where = load_results_store(results).where
        rep["results_store"] = {"where": where, "why": results_why(results)}
    except SmoacsError as exc:
        rep["results_store"] = {"error": str(exc)}
    rep["mlip_weights"] = _mlip_weights()
    rep["vasp"] = _vasp()
    rep["gpaw"] = _gpaw()
    rep["mp_api_key_set"] = bool(os.environ.get("MP_API_KEY"))
    return rep


def _config(args: argparse.Namespace) -> int:
    rep = config_report(args.launchpad, args.store, args.results)
    errors = [k for k in ("launchpad", "job_store", "results_store") if "error" in rep[k]]
    if args.json:
        print(json.dumps(rep, indent=1))
        return 2 if errors else 0

    def show(d: dict[str, Any]) -> str:
        if "error" in d:
            return f"error: {d['error']}"
        return ", ".join(f"{k} {v}" for k, v in d.items() if v not in (None, "") and k != "line")

    lp, js, rs = rep["launchpad"], rep["job_store"], rep["results_store"]
    w, g = rep["mlip_weights"], rep["gpaw"]
    if "error" in lp:
        lp_text = f"error: {lp['error']}"
    else:
        lp_text = f"{lp['kind']} {lp['where']} ({lp['why']})"
    no_ms = "no checkpoint (SMOACS_MATTERSIM_CHECKPOINT or ~/.local/mattersim/pretrained_models)"
    rows = [
        ("SMOACS_HOME", rep["smoacs_home"]),
        ("FW_config.yaml", rep.get("fw_config_file") or "none found"),
        ("LaunchPad", lp_text),
        ("JobStore", f"error: {js['error']}" if "error" in js else js["line"][len("JobStore: ") :]),
        ("results store", show(rs) if "error" in rs else f"{rs['where']} {rs['why']}"),
        ("CHGNet weights", ", ".join(w["chgnet"]) or "none found"),
        ("MatterSim", ", ".join(w["mattersim"]) or no_ms),
        ("VASP", show(rep["vasp"])),
        ("GPAW", f"installed {g.get('version')}" if g["installed"] else "not installed"),
        ("MP_API_KEY", "set" if rep["mp_api_key_set"] else "not set"),
    ]
    for k, v in rows:
        print(f"{k:<15} {v}")
    if errors:  # the report is printed whole; the exit status says it is not usable
        print(f"error: {', '.join(errors)} not usable (see above)", file=sys.stderr)
        return 2
    return 0
