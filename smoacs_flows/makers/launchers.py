"""``smoacs-flows launchers init DIR``: a FireWorks configuration folder laid out as
atomate2's installation guide does.

``FW_config.yaml`` (``CONFIG_FILE_DIR: DIR``; ``export FW_CONFIG_FILE=DIR/FW_config.yaml``),
``my_launchpad.yaml``, one ``my_fworker_<queue>.yaml`` + ``my_qadapter_<queue>.yaml`` per queue
(gpu: proposals and MLIP relaxation; cpu: prefilter, S.U.N., GPAW, summary; vasp: VASP with one
MPI rank per core) and ``jobflow.yaml`` (``JOB_STORE``). Every path is absolute: FireWorks' job
script ``cd``s into ``block_*/launcher_*`` before ``rocket_launch`` runs. ``rocket_launch`` is
``rlaunch ... singleshot`` so that reservation mode (``qlaunch -r``) works, which is also what
applies per-firework ``_queueadapter`` overrides (``smoacs-flows resume --walltime``).
The annotated templates in the repository's ``launchers/`` folder are this module's output for
the placeholder folder :data:`TEMPLATE_DIR` (``tests`` check they match).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from smoacs_flows.errors import SmoacsError

QUEUES = ("gpu", "cpu", "vasp")
SCHEDULERS = ("slurm", "pbs")
#: the folder the shipped templates in launchers/ are rendered for
TEMPLATE_DIR = Path("/path/to/fw_config")
TEMPLATE_ACTIVATE = "source /path/to/smoacs-flows/.venv/bin/activate"

_FWORKER_NOTES = {
    "gpu": "proposal (SMOACS optimisation) and MLIP relaxation fireworks",
    "cpu": "prefilter, S.U.N., DFT fan-out/collection, GPAW DFT and the summary",
    "vasp": "VASP DFT fireworks of campaigns with stages.dft.category: vasp",
}

_MONGO_LAUNCHPAD = """\
# FireWorks LaunchPad on MongoDB. Fill in host/port/name and credentials; keep this file
# private (chmod 600), never in git. Read by `rlaunch`/`qlaunch`/`lpad` (via FW_CONFIG_FILE)
# and by `smoacs-flows submit/status/resume/lpad`.
host: mongodb.example.org      # or a mongodb+srv:// URI with uri_mode: true
port: 27017
name: smoacs_fireworks         # database name
username: null
password: null
authsource: admin
logdir: null
strm_lvl: INFO
user_indices: []
wf_user_indices: []
mongoclient_kwargs:
  serverSelectionTimeoutMS: 5000   # fail fast (smoacs-flows names the host) instead of 30 s
"""

_MONGO_JOB_STORE = {
    "docs_store": {
        "type": "MongoStore",
        "host": "mongodb.example.org",
        "port": 27017,
        "database": "smoacs_jobs",
        "collection_name": "outputs",
        "username": None,
        "password": None,
        "key": "uuid",
    },
    "additional_stores": {
        "data": {
            "type": "GridFSStore",
            "host": "mongodb.example.org",
            "port": 27017,
            "database": "smoacs_jobs",
            "collection_name": "outputs_blobs",
            "username": None,
            "password": None,
            "key": "blob_uuid",
        }
    },
}


def _activate_line() -> str:
    """How a queue job gets this installation's ``smoacs-flows`` on its PATH."""
    act = Path(sys.prefix) / "bin" / "activate"
    if act.is_file():
        return f"source {act}"
    return f"export PATH={Path(sys.executable).parent}:$PATH"


def embedded_launchpad_text(path: Path) -> str:
    """``my_launchpad.yaml`` naming the embedded LaunchPad file."""
    return (
        "# The embedded LaunchPad (no server): a locked mongomock-persistence file. FireWorks'\n"
        "# own rlaunch/qlaunch/lpad cannot open it (no MongoDB host, no lock); use\n"
        "# `smoacs-flows rlaunch|qlaunch|lpad ...`, FireWorks' own command lines on it.\n"
        f"embedded: {path}\n"
    )


def embedded_job_store_spec(home: Path) -> dict[str, Any]:
    """jobflow's ``JOB_STORE`` for the embedded montydb store under ``home`` (absolute)."""
    path = str(home / "jobstore")
    common = {"type": "MontyStore", "database_path": path, "database_name": "smoacs"}
    return {
        "docs_store": {**common, "collection_name": "outputs", "key": "uuid"},
        "additional_stores": {
            "data": {**common, "collection_name": "outputs_blobs", "key": "blob_uuid"}
        },
    }


def _fworker(queue: str) -> str:
    return (
        f"# FireWorks worker of the {queue} queue: {_FWORKER_NOTES[queue]}.\n"
        f"name: smoacs-{queue}\n"
        f"category: {queue}                # = the campaign's category for these fireworks\n"
        "query: '{}'                  # e.g. '{\"spec.tags\": \"smoacs:perovskite\"}': one "
        "campaign only\n"
        "env: {}\n"
    )


#: PBS flavours: Torque (``-l nodes=N:ppn=M``) and PBS Pro / OpenPBS (``-l select=...``)
PBS_FLAVOURS = ("pro", "torque")

#: per queue: cores, GPUs, walltime (HH:MM:SS, which SLURM and PBS both read), memory
_SIZES = {
    "gpu": {"cores": 8, "gpus": 1, "walltime": "04:00:00", "mem": "32gb"},
    "cpu": {"cores": 16, "gpus": 0, "walltime": "12:00:00", "mem": "64gb"},
    "vasp": {"cores": 32, "gpus": 0, "walltime": "24:00:00", "mem": "120gb"},
}

_QUEUE_NOTE = (
    "# queue: your site's queue (partition) for this kind of job. One name per kind keeps\n"
    "# `qlaunch -m N` (at most N queued jobs, counted per queue) apart for gpu / cpu / vasp;\n"
    "# if two kinds share one queue, -m counts their jobs together.\n"
)

#: FireWorks queue templates written beside the adapters (FireWorks' own PBS template knows
#: only Torque's nodes=:ppn= and no GPU); a line whose $${key} is unset is dropped by FireWorks
PBS_TEMPLATES = {
    "PBS_pro.txt": "#PBS -l select=$${nnodes}:ncpus=$${ppnode}:mpiprocs=$${mpiprocs}:mem=$${mem}\n",
    "PBS_pro_gpu.txt": "#PBS -l select=$${nnodes}:ncpus=$${ppnode}:mpiprocs=$${mpiprocs}"
    ":ngpus=$${ngpus}:mem=$${mem}\n",
    "PBS_torque_gpu.txt": "#PBS -l nodes=$${nnodes}:ppn=$${ppnode}:gpus=$${ngpus}\n"
    "#PBS -l mem=$${mem}\n",
}
_PBS_COMMON = """\
#PBS -l walltime=$${walltime}
#PBS -q $${queue}
#PBS -A $${account}
#PBS -N $${job_name}
#PBS -o FW_job.out
#PBS -e FW_job.error

$${pre_rocket}
cd $${launch_dir}
$${rocket_launch}
$${post_rocket}
"""


def pbs_template(name: str) -> str:
    """The text of one shipped PBS queue template."""
    return "#!/bin/bash\n\n" + PBS_TEMPLATES[name] + _PBS_COMMON


def _pbs_template_name(queue: str, flavour: str) -> str | None:
    """The queue template a PBS adapter needs (None: FireWorks' own PBS template)."""
    if flavour == "pro":
        return "PBS_pro_gpu.txt" if _SIZES[queue]["gpus"] else "PBS_pro.txt"
    return "PBS_torque_gpu.txt" if _SIZES[queue]["gpus"] else None


def _resources(
    queue: str, scheduler: str, flavour: str, folder: Path, sizes: dict | None = None
) -> tuple[str, str]:
    """(adapter lines for the job's size, the OMP_NUM_THREADS line) of one queue; ``sizes``:
    ``{queue: {"walltime": "HH:MM:SS", "queue": NAME}}`` (``launchers init --walltime/--queues``)
    over the defaults."""
    z = {**_SIZES[queue], **(sizes or {}).get(queue, {})}
    name = z.get("queue", queue)
    mpi = queue == "vasp"
    if scheduler == "slurm":
        lines = "nodes: 1\n" + (
            f"ntasks: {z['cores']}              # VASP: one MPI rank per core\ncpus_per_task: 1\n"
            if mpi
            else f"ntasks: 1\ncpus_per_task: {z['cores']}          # one process, its threads\n"
        )
        if z["gpus"]:
            lines += f"gres: gpu:{z['gpus']}                   # #SBATCH --gres=gpu:1\n"
        lines += f"walltime: '{z['walltime']}'       # HH:MM:SS\n{_QUEUE_NOTE}queue: {name}\n"
        lines += f"mem: {z['mem'].upper().replace('GB', 'G')}\n"
        omp = (
            "export OMP_NUM_THREADS=1"
            if mpi
            else "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"
        )
        return lines, omp
    template = _pbs_template_name(queue, flavour)
    lines = f"nnodes: 1\nppnode: {z['cores']}               # cores per node\n"
    if flavour == "pro":
        lines += f"mpiprocs: {z['cores'] if mpi else 1}             # MPI ranks per node\n"
    if z["gpus"]:
        lines += f"ngpus: {z['gpus']}\n"
    if flavour == "pro" or z["gpus"]:
        lines += f"mem: {z['mem']}\n"
    lines += f"walltime: '{z['walltime']}'       # HH:MM:SS\n{_QUEUE_NOTE}queue: {name}\n"
    if template:
        lines += f"_fw_template_file: {folder / 'templates' / template}\n"
    # Torque sets PBS_NUM_PPN, PBS Pro NCPUS: the threads follow the job's own size
    omp = (
        "export OMP_NUM_THREADS=1"
        if mpi
        else f"export OMP_NUM_THREADS=${{PBS_NUM_PPN:-${{NCPUS:-{z['cores']}}}}}"
    )
    return lines, omp


#: VASP's MPI launch per scheduler: srun takes the ranks of the allocation; under PBS the
#: node file lists one line per rank (Torque: ppn; PBS Pro: mpiprocs)
_VASP_ENV = {
    "slurm": ('"srun vasp_std"', '"srun vasp_gam"'),
    "pbs": (
        '"mpiexec -n $(wc -l < $PBS_NODEFILE) vasp_std"',
        '"mpiexec -n $(wc -l < $PBS_NODEFILE) vasp_gam"',
    ),
}

_VASP_NOTES = """\
# NCORE / KPAR (INCAR; campaign stages.dft.vasp.incar, or `smoacs-flows resume --incar`):
#   KPAR  = number of k-point groups; ranks are split into KPAR groups (a divisor of the
#           ranks, up to the number of irreducible k-points; KPAR = nodes is a good start).
#   NCORE = ranks working on one band, ~ sqrt(ranks per KPAR group) or the cores per socket
#           (e.g. 4 or 8 for 32-128 cores); NCORE = 1 for small cells or hybrid functionals.
# VASP_CMD: atomate2 reads ATOMATE2_VASP_CMD (or VASP_CMD in ~/.atomate2.yaml); custodian runs
# it inside this job. {launch} POTCARs: PMG_VASP_PSP_DIR.
"""
_VASP_LAUNCH = {
    "slurm": "srun starts the job's ntasks ranks.",
    "pbs": "mpiexec -n starts one rank per line of $PBS_NODEFILE (the job's ranks).",
}


def _qadapter(
    queue: str,
    scheduler: str,
    folder: Path,
    rlaunch: str,
    activate: str,
    flavour: str = "pro",
    home: str | None = None,
    fworker: str | None = None,
    sizes: dict | None = None,
    multi: bool = False,
) -> str:
    res, omp = _resources(queue, scheduler, flavour, folder, sizes)
    fworker = fworker or str(folder / f"my_fworker_{queue}.yaml")
    launch = "singleshot"
    notes = [
        "# singleshot: one firework per queue job; needed by reservation mode (qlaunch -r), which",
        "# is also what applies a firework's _queueadapter overrides (resume --walltime/--cores).",
    ]
    if multi and queue == "cpu":
        # every core busy: one single-threaded rocket per core of the job (FireWorks' own
        # rlaunch multi); GPAW and the other cpu jobs run one thread each
        cores = (
            "${SLURM_CPUS_PER_TASK:-1}"
            if scheduler == "slurm"
            else f"${{PBS_NUM_PPN:-${{NCPUS:-{_SIZES['cpu']['cores']}}}}}"
        )
        launch = f"multi {cores} --nlaunches 0"
        omp = "export OMP_NUM_THREADS=1"
        notes = [
            "# multi N: N single-threaded rockets side by side (FireWorks' rlaunch multi), one",
            "# per core of the job, until no cpu firework is ready. Launch with qlaunch WITHOUT -r",
            "# (reservation binds one firework to a job), so _queueadapter overrides do not apply.",
        ]
    kind = scheduler.upper() + (
        f" ({'PBS Pro' if flavour == 'pro' else 'Torque'})" if scheduler == "pbs" else ""
    )
    lines = [
        f"# {kind} queue adapter of the {queue} queue ({_FWORKER_NOTES[queue]}).",
        "# Absolute paths: FireWorks' job script cds into block_*/launcher_* before rocket_launch.",
        *notes,
        "_fw_name: CommonAdapter",
        f"_fw_q_type: {scheduler.upper() if scheduler == 'pbs' else 'SLURM'}",
        f"rocket_launch: {rlaunch} -l {folder / 'my_launchpad.yaml'} -w {fworker} {launch}",
        res.rstrip("\n"),
        "account: null",
        f"job_name: smoacs-{queue}",
        "pre_rocket: |",
        f"  {activate}",
        f"  export FW_CONFIG_FILE={folder / 'FW_config.yaml'}",
        f"  export JOBFLOW_CONFIG_FILE={folder / 'jobflow.yaml'}   # the JOB_STORE",
        (
            f"  export SMOACS_HOME={home}   # the embedded stores; caches"
            if home
            else "  # export SMOACS_HOME=/path/to/smoacs_home   # caches (default ~/.smoacs)"
        ),
        f"  {omp}",
    ]
    if queue == "gpu":
        lines.append("  export SMOACS_GPU_QUEUE=1   # a job here without a GPU says so loudly")
    if queue == "vasp":
        std, gam = _VASP_ENV[scheduler]
        lines += [
            f"  export ATOMATE2_VASP_CMD={std}",
            f"  export ATOMATE2_VASP_GAMMA_CMD={gam}",
            "  # export PMG_VASP_PSP_DIR=/path/to/potcars",
        ]
    lines += ["post_rocket: null", "logdir: null"]
    text = "\n".join(lines) + "\n"
    return text + (_VASP_NOTES.format(launch=_VASP_LAUNCH[scheduler]) if queue == "vasp" else "")


def _fw_config(folder: Path) -> str:
    return (
        f"# FireWorks settings, atomate2's layout: export FW_CONFIG_FILE={folder}/FW_config.yaml\n"
        "# then rlaunch, qlaunch, lpad, smoacs-flows find my_launchpad.yaml in CONFIG_FILE_DIR.\n"
        f"CONFIG_FILE_DIR: {folder}\n"
    )


def _jobflow(spec: dict[str, Any], note: str) -> str:
    body = yaml.safe_dump({"JOB_STORE": spec}, sort_keys=False)
    return (
        "# jobflow settings (export JOBFLOW_CONFIG_FILE=this file): JOB_STORE is where every\n"
        "# worker writes job outputs and where smoacs-flows query/status/report read them.\n"
        f"# {note}\n" + body
    )


def render(
    folder: Path,
    launchpad_text: str,
    job_store: dict[str, Any],
    store_note: str,
    scheduler: str = "slurm",
    rlaunch: str = "rlaunch",
    activate: str | None = None,
    flavour: str = "pro",
    home: str | None = None,
    sizes: dict | None = None,
    cpu_multi: bool = False,
) -> dict[str, str]:
    """``{relative file name: text}`` of a configuration folder (``folder`` absolute).

    Beside the per-queue files, each queue gets FireWorks' standard names in its own folder
    (``gpu/my_fworker.yaml``, ``gpu/my_qadapter.yaml``, ``gpu/my_launchpad.yaml``), so that
    FireWorks' ``qlaunch -c DIR/gpu`` finds them; PBS adapters name the queue templates
    written under ``templates/``.
    """
    activate = activate or _activate_line()
    files = {
        "FW_config.yaml": _fw_config(folder),
        "my_launchpad.yaml": launchpad_text,
        "jobflow.yaml": _jobflow(job_store, store_note),
    }
    for q in QUEUES:
        files[f"my_fworker_{q}.yaml"] = _fworker(q)
        files[f"my_qadapter_{q}.yaml"] = _qadapter(
            q, scheduler, folder, rlaunch, activate, flavour, home, sizes=sizes, multi=cpu_multi
        )
        files[f"{q}/my_fworker.yaml"] = _fworker(q)
        files[f"{q}/my_qadapter.yaml"] = _qadapter(
            q,
            scheduler,
            folder,
            rlaunch,
            activate,
            flavour,
            home,
            str(folder / q / "my_fworker.yaml"),
            sizes,
            cpu_multi,
        )
        files[f"{q}/my_launchpad.yaml"] = launchpad_text
    if scheduler == "pbs":
        for q in QUEUES:
            name = _pbs_template_name(q, flavour)
            if name:
                files[f"templates/{name}"] = pbs_template(name)
    return files


def render_templates() -> dict[str, str]:
    """The annotated templates of the repository's ``launchers/`` folder."""
    return render(
        TEMPLATE_DIR,
        _MONGO_LAUNCHPAD,
        _MONGO_JOB_STORE,
        "Fill in MongoDB (documents + GridFS for the `data` store); keep private (chmod 600).",
        activate=TEMPLATE_ACTIVATE,
    )


def _launchpad_from(file: Path) -> tuple[str, bool]:
    """(text, embedded?) of a user's LaunchPad file, checked but not connected to."""
    from smoacs_flows.io import load_yaml

    spec = load_yaml(file, "LaunchPad file", SmoacsError)
    if not isinstance(spec, dict) or not (spec.get("host") or spec.get("embedded")):
        raise SmoacsError(f"{file}: not a LaunchPad file (expected host: ... or embedded: ...)")
    if spec.get("embedded"):
        path = Path(os.path.expandvars(str(spec["embedded"]))).expanduser().resolve()
        return embedded_launchpad_text(path), True
    return file.read_text(), False


def _job_store_from(file: Path) -> tuple[dict[str, Any], str]:
    """(expanded ``JOB_STORE`` spec, note) from a JobStore file, checked by building it."""
    from smoacs_flows.io import load_yaml
    from smoacs_flows.stores.jobstore import _expand, _require_shared, job_store_from_spec

    spec = load_yaml(file, "JobStore file", SmoacsError)
    # a SpecError naming the file; queue workers are other processes: no in-memory store
    _require_shared(job_store_from_spec(spec, source=str(file)), str(file))
    if "JOB_STORE" in spec:
        spec = spec["JOB_STORE"]
    return _expand(spec), f"From {file} (variables expanded); keep private if it holds passwords."


def _per_queue(text: str | None, option: str) -> dict[str, str]:
    """``"gpu=a,vasp=b"`` → ``{"gpu": "a", "vasp": "b"}``; other queues are an error."""
    out: dict[str, str] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        q, sep, val = (x.strip() for x in part.partition("="))
        if not sep or q not in QUEUES or not val:
            raise SmoacsError(
                f"{option} {part!r}: expected QUEUE=VALUE with QUEUE one of {', '.join(QUEUES)}"
            )
        out[q] = val
    return out


def _sizes(walltime: str | None, queues: str | None) -> dict[str, dict[str, str]]:
    """``{queue: {"walltime": HH:MM:SS, "queue": NAME}}`` from ``--walltime``/``--queues``."""
    from smoacs_flows.makers.recovery import parse_walltime

    out: dict[str, dict[str, str]] = {}
    for q, t in _per_queue(walltime, "--walltime").items():
        try:
            out.setdefault(q, {})["walltime"] = parse_walltime(t)
        except SmoacsError as exc:
            raise SmoacsError(f"--walltime {q}={t}: {str(exc).split(': ', 1)[-1]}") from None
    for q, name in _per_queue(queues, "--queues").items():
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
            raise SmoacsError(f"--queues {q}={name!r}: not a queue name")
        out.setdefault(q, {})["queue"] = name
    return out


def init_launchers(
    folder: str | Path,
    launchpad: str | Path | None = None,
    embedded: bool = False,
    store: str | Path | None = None,
    scheduler: str = "slurm",
    force: bool = False,
    pbs_flavour: str = "pro",
    walltime: str | None = None,
    queues: str | None = None,
    cpu_multi: bool = False,
) -> dict[str, Path]:
    """Write the configuration folder atomically (nothing when any input is bad).

    ``walltime``: ``gpu=4:00:00,vasp=2-00:00:00`` (each ``[D-]HH:MM:SS`` or whole minutes,
    written ``HH:MM:SS``, which SLURM and PBS both read); ``queues``: ``gpu=NAME,cpu=NAME,
    vasp=NAME`` (default: the kind's own name).
    """
    from smoacs_flows.io import atomic_output_dir
    from smoacs_flows.makers.launchpad import embedded_launchpad_path

    if scheduler not in SCHEDULERS:
        raise SmoacsError(f"--scheduler {scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    if pbs_flavour not in PBS_FLAVOURS:
        raise SmoacsError(
            f"--pbs-flavour {pbs_flavour!r}: expected one of {', '.join(PBS_FLAVOURS)}"
        )
    if launchpad and embedded:
        raise SmoacsError("--launchpad and --embedded exclude each other")
    if cpu_multi and embedded:
        raise SmoacsError(
            "--cpu-multi needs a MongoDB LaunchPad: rlaunch multi's processes share one "
            "LaunchPad server, which the embedded file LaunchPad cannot be"
        )
    sizes = _sizes(walltime, queues)
    folder = Path(folder).expanduser().absolute()
    if not folder.parent.is_dir():
        raise SmoacsError(f"{folder}: parent folder {folder.parent} does not exist")
    if launchpad:
        lp_text, is_embedded = _launchpad_from(Path(launchpad).expanduser())
    elif embedded:
        lp_text, is_embedded = embedded_launchpad_text(embedded_launchpad_path().resolve()), True
    else:
        lp_text, is_embedded = _MONGO_LAUNCHPAD, False
    if store:
        spec, note = _job_store_from(Path(store).expanduser())
    elif is_embedded:
        from smoacs_flows.config import smoacs_home

        home = smoacs_home().resolve()
        spec, note = embedded_job_store_spec(home), f"The embedded montydb store under {home}."
    else:
        spec = _MONGO_JOB_STORE
        note = (
            "Fill in MongoDB (documents + GridFS for the `data` store); keep private (chmod 600)."
        )
    from smoacs_flows.config import smoacs_home_path

    files = render(
        folder,
        lp_text,
        spec,
        note,
        scheduler,
        rlaunch="smoacs-flows rlaunch" if is_embedded else "rlaunch",
        flavour=pbs_flavour,
        home=str(smoacs_home_path().expanduser().absolute()) if is_embedded else None,
        sizes=sizes,
        cpu_multi=cpu_multi,
    )
    with atomic_output_dir(folder, force=force) as tmp:
        tmp.chmod(0o700)
        for name, text in files.items():
            p = tmp / name
            p.parent.mkdir(exist_ok=True)
            p.write_text(text)
            if p.name in ("my_launchpad.yaml", "jobflow.yaml"):
                p.chmod(0o600)
    return {name: folder / name for name in files}
