"""Finding and rerunning failed fireworks of a campaign: ``smoacs-flows status`` / ``resume``.

A firework needs a rerun when it FIZZLED (an exception, a custodian error it could not fix) or
when it is *lost*: RUNNING, but its launch has not pinged the LaunchPad for ``lost_after``
seconds (a killed worker, a walltime kill; FireWorks' ``detect_lostruns``). ``resume`` shows
why each failed, optionally applies overrides to those fireworks only (INCAR settings and
custodian's max_errors for atomate2 VASP jobs, GPAW settings for GPAW jobs, queue walltime,
category), marks lost runs fizzled and reruns them with ``rerun_fw``. COMPLETED fireworks are
never touched; only the failed one and the jobs waiting on it run again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireworks import LaunchPad

from smoacs_flows.errors import SmoacsError
from smoacs_flows.makers.launchpad import lp_session

#: FireWorks' default RUN_EXPIRATION_SECS: a RUNNING launch silent this long is lost
LOST_AFTER = 4 * 3600


class OverrideError(SmoacsError):
    """A malformed or inapplicable override."""


# ----------------------------------------------------------------------------- reasons


def _custodian_reason(launch_dir: str | None) -> str | None:
    """The last custodian correction of a launch folder, as ``handler: errors``."""
    if not launch_dir:
        return None
    path = Path(launch_dir) / "custodian.json"
    if not path.is_file():
        return None
    try:
        runs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for run in reversed(runs if isinstance(runs, list) else []):
        for corr in reversed(run.get("corrections") or []):
            handler = (corr.get("handler") or {}).get("@class", "handler")
            errors = ", ".join(map(str, corr.get("errors") or [])) or "error"
            return f"custodian {handler}: {errors}"
    return None


def failure_reason(lp: LaunchPad, fw_id: int) -> str:
    """Why a firework failed: the custodian correction and the exception's last line."""
    with lp_session(lp, write=False):
        launch = lp.launches.find_one({"fw_id": fw_id}, sort=[("launch_id", -1)])
    if launch is None:
        return "no launch recorded"
    if launch.get("state") == "RUNNING":
        hist = [h for h in launch.get("state_history", []) if h.get("state") == "RUNNING"]
        last = (hist[-1].get("updated_on") if hist else None) or "?"
        return (
            f"lost run: RUNNING on {launch.get('host', '?')} with no heartbeat since "
            f"{last} (killed worker or walltime)"
        )
    exc = ((launch.get("action") or {}).get("stored_data") or {}).get("_exception") or {}
    lines = [x for x in str(exc.get("_stacktrace", "")).strip().splitlines() if x.strip()]
    last = lines[-1].strip() if lines else "unknown error"
    cust = _custodian_reason(launch.get("launch_dir"))
    return f"{cust}; {last}" if cust and cust not in last else last


# ----------------------------------------------------------------------------- overrides


def _parse_value(raw: str) -> Any:
    low = raw.strip().lower()
    if low in (".true.", "true", "t"):
        return True
    if low in (".false.", "false", "f"):
        return False
    for typ in (int, float):
        try:
            return typ(raw)
        except ValueError:
            pass
    return raw.strip()


def parse_assignments(text: str, option: str, upper: bool = False) -> dict[str, Any]:
    """``"ALGO=All,NELM=200"`` → ``{"ALGO": "All", "NELM": 200}``; errors name the option."""
    out: dict[str, Any] = {}
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise OverrideError(
                f"{option} {part.strip()!r}: expected KEY=VALUE (e.g. {option} ALGO=All,NELM=200)"
            )
        key, raw = (s.strip() for s in part.split("=", 1))
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key) or raw == "":
            raise OverrideError(f"{option} {part.strip()!r}: expected KEY=VALUE")
        out[key.upper() if upper else key] = _parse_value(raw)
    if not out:
        raise OverrideError(f"{option}: no KEY=VALUE given")
    return out


def parse_walltime(text: str) -> str:
    """A walltime in minutes (``90``), ``H:MM:SS`` or ``D-HH:MM:SS`` → ``HH:MM:SS`` (hours
    may pass 24), the one form SLURM (``--time``) and PBS (``-l walltime``) both read the same
    way; PBS would take a bare ``90`` as seconds."""
    t = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d{1,4}):(\d{2}):(\d{2})", t)
    if re.fullmatch(r"\d+", t):
        seconds = int(t) * 60
    elif m:
        days, h, mi, se = (int(x or 0) for x in m.groups())
        if mi >= 60 or se >= 60:
            raise OverrideError(f"--walltime {text!r}: minutes and seconds must be below 60")
        seconds = ((days * 24 + h) * 60 + mi) * 60 + se
    else:
        raise OverrideError(
            f"--walltime {text!r}: expected minutes (90), H:MM:SS (1:30:00) or D-HH:MM:SS"
        )
    if seconds <= 0:
        raise OverrideError(f"--walltime {text!r}: must be longer than zero")
    h, rest = divmod(seconds, 3600)
    return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def size_overrides(kind: str, cores: int | None, nodes: int | None) -> dict[str, int]:
    """``_queueadapter`` keys for a rerun's size, for both schedulers' templates (FireWorks
    fills the keys its template names and ignores the others): SLURM ``nodes`` and
    ``ntasks`` (VASP: MPI ranks) or ``cpus_per_task`` (one threaded process); PBS ``nnodes``,
    ``ppnode`` and, for PBS Pro, ``mpiprocs``."""
    out: dict[str, int] = {}
    if nodes is not None:
        out.update(nodes=nodes, nnodes=nodes)
    if cores is not None:
        out["ppnode"] = cores
        if kind == "vasp":
            out.update(ntasks=cores * (nodes or 1), mpiprocs=cores)
        else:
            out.update(cpus_per_task=cores, mpiprocs=1)
    return out


@dataclass
class Overrides:
    """What to change in each failed firework before its rerun."""

    incar: dict[str, Any] = field(default_factory=dict)
    max_errors: int | None = None
    gpaw: dict[str, Any] = field(default_factory=dict)
    walltime: str | None = None
    category: str | None = None
    cores: int | None = None
    nodes: int | None = None

    def __bool__(self) -> bool:
        return bool(
            self.incar
            or self.max_errors is not None
            or self.gpaw
            or self.walltime
            or self.category
            or self.cores
            or self.nodes
        )


def _job(spec: dict[str, Any]) -> dict[str, Any] | None:
    tasks = spec.get("_tasks") or []
    return tasks[0].get("job") if tasks and isinstance(tasks[0].get("job"), dict) else None


def job_kind(spec: dict[str, Any]) -> str:
    """``vasp`` (an atomate2 VASP maker job), ``gpaw``, or ``other``."""
    job = _job(spec)
    fn = (job or {}).get("function") or {}
    bound = fn.get("@bound")
    if (
        isinstance(bound, dict)
        and "input_set_generator" in bound
        and str(fn.get("@module", "")).startswith("atomate2.vasp")
    ):
        return "vasp"
    if fn.get("@callable") == "gpaw_dft_job" or (
        isinstance(bound, dict) and bound.get("@class") == "GpawSpinDosMaker"
    ):
        return "gpaw"
    return "other"


def apply_overrides(spec: dict[str, Any], ov: Overrides) -> dict[str, Any]:
    """The spec keys to update (``_tasks``, ``_queueadapter``, ``_category``) for ``ov``."""
    from smoacs_flows.dft.gpaw_engine import GPAWSettings

    upd: dict[str, Any] = {}
    kind = job_kind(spec)
    if (ov.incar or ov.max_errors is not None) and kind == "vasp":
        tasks = json.loads(json.dumps(spec["_tasks"]))
        bound = tasks[0]["job"]["function"]["@bound"]
        if ov.incar:
            gen = bound["input_set_generator"]
            gen["user_incar_settings"] = {**(gen.get("user_incar_settings") or {}), **ov.incar}
        if ov.max_errors is not None:
            bound["run_vasp_kwargs"] = {
                **(bound.get("run_vasp_kwargs") or {}),
                "max_errors": ov.max_errors,
            }
        upd["_tasks"] = tasks
    if ov.gpaw and kind == "gpaw":
        bad = sorted(set(ov.gpaw) - set(GPAWSettings.model_fields))
        if bad:
            raise OverrideError(
                f"--gpaw {bad[0]}: not a GPAW setting ({', '.join(GPAWSettings.model_fields)})"
            )
        tasks = json.loads(json.dumps(spec["_tasks"]))
        fn = tasks[0]["job"]["function"]
        if isinstance(fn.get("@bound"), dict):  # a GpawSpinDosMaker job: change the Maker
            from pydantic import ValidationError

            from smoacs_flows.dft.gpaw_maker import GpawSpinDosMaker

            try:
                maker = GpawSpinDosMaker.from_dict(fn["@bound"]).with_overrides(ov.gpaw)
            except ValidationError as exc:
                raise OverrideError(f"--gpaw: {exc.errors()[0]['msg']}") from None
            fn["@bound"] = maker.as_dict()
        else:  # the older gpaw_dft_job(record, dft)
            args = tasks[0]["job"]["function_args"]
            args[1] = {**args[1], "gpaw": {**(args[1].get("gpaw") or {}), **ov.gpaw}}
        upd["_tasks"] = tasks
    qa = dict(spec.get("_queueadapter") or {})
    if ov.walltime:
        qa["walltime"] = ov.walltime
    qa.update(size_overrides(kind, ov.cores, ov.nodes))
    if qa != (spec.get("_queueadapter") or {}):
        upd["_queueadapter"] = qa
    if ov.category:
        upd["_category"] = ov.category
    return upd


# ----------------------------------------------------------------------------- resume


@dataclass
class Failed:
    """A firework that needs a rerun."""

    fw_id: int
    name: str
    stage: str
    state: str  # FIZZLED | LOST
    category: str
    kind: str
    reason: str
    candidate_id: str | None = None
    changes: list[str] = field(default_factory=list)


def _parents(lp: LaunchPad, tag: str) -> dict[int, set[int]]:
    """``{fw_id: parent fw ids}`` over the workflows of a campaign tag."""
    out: dict[int, set[int]] = {}
    for wf in lp.workflows.find({"metadata.tags": tag}, {"links": 1}):
        for parent, children in (wf.get("links") or {}).items():
            for c in children:
                out.setdefault(int(c), set()).add(int(parent))
    return out


def find_failed(
    lp: LaunchPad, tag: str, lost_after: float = LOST_AFTER, stages: list[str] | None = None
) -> list[Failed]:
    """FIZZLED and lost fireworks of a campaign version (``stages`` restricts)."""
    out = []
    with lp_session(lp, write=False):
        parents = _parents(lp, tag)
        _, lost_ids, _ = LaunchPad.detect_lostruns(
            lp,
            expiration_secs=lost_after,
            fizzle=False,
            rerun=False,
            query={"spec.tags": tag, "state": "RUNNING"},
        )
        lost = set(lost_ids)
        fws = list(
            lp.fireworks.find(
                {"spec.tags": tag, "$or": [{"state": "FIZZLED"}, {"fw_id": {"$in": sorted(lost)}}]},
                {"fw_id": 1, "name": 1, "state": 1, "spec": 1},
            )
        )
    fizzled = {fw["fw_id"] for fw in fws if fw["state"] == "FIZZLED"}
    for fw in sorted(fws, key=lambda f: f["fw_id"]):
        stage = fw["spec"].get("stage", "?")
        if stages and stage not in stages:
            continue
        if parents.get(fw["fw_id"], set()) & fizzled:
            continue  # fizzled because a parent did: reruns with it
        out.append(
            Failed(
                fw_id=fw["fw_id"],
                name=fw["name"],
                stage=stage,
                state="LOST" if fw["fw_id"] in lost else fw["state"],
                category=fw["spec"].get("_category", ""),
                kind=job_kind(fw["spec"]),
                reason=failure_reason(lp, fw["fw_id"]),
                candidate_id=fw["spec"].get("candidate_id"),
            )
        )
    return out


def check_gpaw_overrides(gpaw: dict[str, Any]) -> None:
    """Refuse ``--gpaw`` names that are no GPAW setting and values the setting rejects
    (``maxiter=abc``), whether or not any firework needs a rerun."""
    from pydantic import ValidationError

    from smoacs_flows.dft.gpaw_engine import GPAWSettings

    bad = sorted(set(gpaw) - set(GPAWSettings.model_fields))
    if bad:
        raise OverrideError(
            f"--gpaw {bad[0]}: not a GPAW setting ({', '.join(GPAWSettings.model_fields)})"
        )
    try:
        GPAWSettings.model_validate(gpaw)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(x) for x in err["loc"])
        raise OverrideError(f"--gpaw {name}={gpaw.get(err['loc'][0])!r}: {err['msg']}") from None


def check_incar_overrides(incar: dict[str, Any]) -> None:
    """Refuse ``--incar`` tags VASP does not know and values of the wrong type, with the check
    ``submit`` makes on a campaign's INCAR settings (pymatgen's ``Incar.check_params``)."""
    from pydantic import ValidationError

    from smoacs_flows.dft.vasp import VaspChainSettings

    try:
        VaspChainSettings.model_validate({"incar": incar})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise OverrideError(f"--incar: {msg}") from None


def check_request(lp: LaunchPad, tag: str, ov: Overrides, stages: list[str] | None = None) -> None:
    """Check ``--gpaw`` and ``--incar`` overrides and ``--stage`` names before anything is
    written (also when nothing needs rerunning): a bad one is an :class:`OverrideError`."""
    from smoacs_flows.makers.core import STAGES

    if ov.gpaw:
        check_gpaw_overrides(ov.gpaw)
    if ov.incar:
        check_incar_overrides(ov.incar)
    if stages:
        with lp_session(lp, write=False):
            known = set(STAGES) | {
                s for s in lp.fireworks.distinct("spec.stage", {"spec.tags": tag}) if s
            }
        unknown = sorted(set(stages) - known)
        if unknown:
            raise OverrideError(
                f"--stage {unknown[0]}: not a stage of {tag} (stages: {', '.join(sorted(known))})"
            )


#: states a person put fireworks in (``lpad defuse_fws`` / ``pause_fws``); not failures
HELD_STATES = ("DEFUSED", "PAUSED")


def held_fireworks(lp: LaunchPad, tag: str) -> list[dict[str, Any]]:
    """The DEFUSED and PAUSED fireworks of a campaign version (``fw_id``, ``name``, ``state``,
    ``stage``)."""
    with lp_session(lp, write=False):
        docs = lp.fireworks.find(
            {"spec.tags": tag, "state": {"$in": list(HELD_STATES)}},
            {"fw_id": 1, "name": 1, "state": 1, "spec.stage": 1},
        )
        return [
            {
                "fw_id": d["fw_id"],
                "name": d["name"],
                "state": d["state"],
                "stage": d.get("spec", {}).get("stage", "?"),
            }
            for d in sorted(docs, key=lambda d: d["fw_id"])
        ]


def release_held(
    lp: LaunchPad, tag: str, dry_run: bool = False, overrides: Overrides | None = None
) -> list[dict[str, Any]]:
    """Reignite the DEFUSED and resume the PAUSED fireworks of a campaign version (FireWorks'
    own ``reignite_fw`` / ``resume_fw``), with ``overrides`` (walltime, size, category, ...)
    applied to them first; returns them, each with the spec keys changed (``changes``)."""
    held = held_fireworks(lp, tag)
    ov = overrides or Overrides()
    updates: dict[int, dict[str, Any]] = {}
    with lp_session(lp, write=False):
        for f in held:
            spec = lp.fireworks.find_one({"fw_id": f["fw_id"]}, {"spec": 1})["spec"]
            updates[f["fw_id"]] = apply_overrides(spec, ov) if ov else {}
            f["changes"] = sorted(updates[f["fw_id"]])
    if dry_run or not held:
        return held
    with lp_session(lp):
        for f in held:
            if updates[f["fw_id"]]:
                lp.update_spec([f["fw_id"]], updates[f["fw_id"]])
            if f["state"] == "DEFUSED":
                lp.reignite_fw(f["fw_id"])
            else:
                lp.resume_fw(f["fw_id"])
    return held


def resume(
    lp: LaunchPad,
    tag: str,
    overrides: Overrides | None = None,
    stages: list[str] | None = None,
    lost_after: float = LOST_AFTER,
    dry_run: bool = False,
    fw_ids: list[int] | None = None,
) -> list[Failed]:
    """Rerun the failed fireworks of a campaign version (with ``overrides`` applied to them
    only). Every override is checked against every firework before anything is written."""
    ov = overrides or Overrides()
    check_request(lp, tag, ov, stages)  # refused before anything is read for a rerun or written
    with lp_session(lp, write=not dry_run):
        failed = find_failed(lp, tag, lost_after, stages)
        if fw_ids:
            unknown = sorted(set(fw_ids) - {f.fw_id for f in failed})
            if unknown:
                raise OverrideError(f"--fw {unknown[0]}: not a failed firework of {tag}")
            failed = [f for f in failed if f.fw_id in fw_ids]
        kinds = {f.kind for f in failed}
        if failed and (ov.incar or ov.max_errors is not None) and "vasp" not in kinds:
            raise OverrideError(
                "--incar/--max-errors apply to VASP jobs; none of the "
                f"{len(failed)} failed fireworks is one"
            )
        if failed and ov.gpaw and "gpaw" not in kinds:
            raise OverrideError(
                f"--gpaw applies to GPAW jobs; none of the {len(failed)} failed fireworks is one"
            )
        updates = {}
        for f in failed:
            spec = lp.fireworks.find_one({"fw_id": f.fw_id}, {"spec": 1})["spec"]
            upd = apply_overrides(spec, ov)
            f.changes = sorted(upd)
            updates[f.fw_id] = upd
        if dry_run or not failed:
            return failed
        lost = [f.fw_id for f in failed if f.state == "LOST"]
        if lost:
            LaunchPad.detect_lostruns(
                lp, expiration_secs=lost_after, fizzle=True, query={"fw_id": {"$in": lost}}
            )
        for f in failed:
            if updates[f.fw_id]:
                lp.update_spec([f.fw_id], updates[f.fw_id])
            lp.rerun_fw(f.fw_id)
    return failed
