"""The jobflow ``JobStore`` of a campaign: job outputs plus a ``data`` additional store.

atomate2 jobs put large objects (DOS, band structures) into the additional store named ``data``;
smoacs jobs put candidate records there. The embedded default is montydb (sqlite) under
``$SMOACS_HOME/jobstore``; clusters use MongoDB + GridFS from a YAML file in jobflow's
``JOB_STORE`` format (templates in the top-level ``stores/`` folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jobflow import JobStore
from maggma.stores import MontyStore

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import SpecError

#: environment variable naming a JobStore YAML file (overrides the embedded default)
JOB_STORE_ENV = "SMOACS_JOB_STORE"
#: modules a monty-serialised store file (``@module``/``@class``) may name
TRUSTED_MODULES = ("jobflow.", "maggma.", "smoacs_flows.")


class EnvMontyStore(MontyStore):
    """A maggma ``MontyStore`` whose ``database_path`` may hold ``~`` and ``$VARS``
    (``$SMOACS_HOME`` defaults to ``~/.smoacs``), expanded when the store is built.

    jobflow builds stores from its settings file without expanding anything, so a plain
    ``MontyStore`` with ``database_path: $SMOACS_HOME/jobstore`` would create a folder literally
    named ``$SMOACS_HOME`` in the working directory; ``stores/embedded.yaml`` names this class.
    """

    def __init__(
        self,
        collection_name: str,
        database_path: str | None = None,
        database_name: str = "db",
        storage: str = "sqlite",
        storage_kwargs: dict | None = None,
        client_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        """As ``MontyStore`` (the same arguments, so ``as_dict`` keeps them all), with
        ``database_path`` expanded and created."""
        if database_path is not None:
            database_path = _expand(str(database_path))
            Path(database_path).mkdir(parents=True, exist_ok=True)
        super().__init__(
            collection_name,
            database_path=database_path,
            database_name=database_name,
            storage=storage,  # type: ignore[arg-type]
            storage_kwargs=storage_kwargs,
            client_kwargs=client_kwargs,
            **kwargs,
        )


def embedded_job_store(path: str | Path | None = None) -> JobStore:
    """montydb JobStore (``outputs`` + ``data`` → ``outputs_blobs``) under ``$SMOACS_HOME``."""
    from maggma.stores import MontyStore

    path = Path(path) if path else smoacs_home() / "jobstore"
    path.mkdir(parents=True, exist_ok=True)
    kw = {"database_path": str(path.resolve()), "database_name": "smoacs"}
    return JobStore(
        MontyStore("outputs", key="uuid", **kw),
        additional_stores={"data": MontyStore("outputs_blobs", key="blob_uuid", **kw)},
    )


def _expand(obj: Any) -> Any:
    """Expand ``~`` and ``$VARS`` (``$SMOACS_HOME`` included) in string values."""
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    if isinstance(obj, str) and ("$" in obj or obj.startswith("~")):
        obj = obj.replace("${SMOACS_HOME}", "$SMOACS_HOME")
        obj = obj.replace("$SMOACS_HOME", str(smoacs_home()))
        return os.path.expanduser(os.path.expandvars(obj))
    return obj


def job_store_from_spec(spec: dict[str, Any], source: str = "job store") -> JobStore:
    """A JobStore from jobflow's dict spec (``docs_store`` + ``additional_stores``)."""
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: expected a mapping with docs_store and additional_stores")
    if "JOB_STORE" in spec:  # a whole jobflow settings file
        spec = spec["JOB_STORE"]
        if not isinstance(spec, dict):
            raise SpecError(f"{source}: JOB_STORE: expected a mapping (docs_store, ...)")
    if "@class" in spec:  # monty-serialised (``dumpfn(job_store, ...)``), as jobflow reads it
        return _decode_store(spec, source)
    if spec.get("type") == "embedded":
        return embedded_job_store(_expand(spec.get("path")) if spec.get("path") else None)
    if "docs_store" not in spec:
        raise SpecError(f"{source}: docs_store: missing (see stores/*.yaml for templates)")
    if "data" not in (spec.get("additional_stores") or {}):
        raise SpecError(
            f"{source}: additional_stores.data: missing (atomate2 and smoacs jobs put large "
            "objects there)"
        )
    spec = _expand(spec)
    for sub in [spec["docs_store"], *spec["additional_stores"].values()]:
        if sub.get("type") == "MontyStore" and sub.get("database_path"):
            Path(sub["database_path"]).mkdir(parents=True, exist_ok=True)
    try:
        return JobStore.from_dict_spec(spec)
    except Exception as exc:  # noqa: BLE001 - unknown store types, bad arguments
        raise SpecError(f"{source}: {type(exc).__name__}: {exc}") from None


def _decode_store(spec: dict[str, Any], source: str) -> JobStore:
    """A JobStore from its monty-serialised dict, naming only trusted modules."""
    from monty.json import MontyDecoder

    def check(obj: Any, where: str) -> None:
        if isinstance(obj, dict):
            mod = obj.get("@module")
            if mod is not None and not str(mod).startswith(TRUSTED_MODULES):
                raise SpecError(
                    f"{source}: {where}@module {mod!r}: only jobflow, maggma and smoacs_flows "
                    "classes may be named in a store file"
                )
            for k, v in obj.items():
                check(v, f"{where}{k}.")

    check(spec, "")
    try:
        store = MontyDecoder().process_decoded(_expand(spec))
    except Exception as exc:  # noqa: BLE001 - unknown classes, bad arguments
        raise SpecError(f"{source}: {type(exc).__name__}: {exc}") from None
    if not isinstance(store, JobStore):
        raise SpecError(f"{source}: @class: expected a jobflow JobStore")
    _require_data(store, source)
    return store


def _require_shared(store: JobStore, source: str) -> None:
    """Refuse stores that live in one process's memory: the workers of a campaign are other
    processes, so a job's outputs would be gone when the next job looks them up ("Could not
    resolve reference ... not in store"). MemoryStore and JSONStore (a MemoryStore loaded
    from, and with ``read_only: false`` written back to, a file without locking) are such
    stores; so is a MontyStore with montydb's ``memory`` storage."""
    from maggma.stores import MemoryStore

    subs = {"docs_store": store.docs_store, **dict(store.additional_stores or {})}
    for name, sub in subs.items():
        kind = type(sub).__name__
        in_memory = isinstance(sub, MemoryStore) and not isinstance(sub, MontyStore)
        if isinstance(sub, MontyStore) and (
            getattr(sub, "storage", None) == "memory" or not getattr(sub, "database_path", None)
        ):
            in_memory = True
        if in_memory:
            raise SpecError(
                f"{source}: {name}: a {kind} lives in one process's memory (a JSONStore is "
                "read into memory and written back unlocked), but each job of a campaign runs "
                "in another worker process, which would not see the outputs it needs; use a "
                "MongoStore (with a GridFSStore for data), or a MontyStore with a "
                "database_path (stores/*.yaml)"
            )


def _require_data(store: JobStore, source: str) -> None:
    if "data" not in dict(store.additional_stores or {}):
        raise SpecError(
            f"{source}: additional_stores.data: missing (atomate2 and smoacs jobs put large "
            "objects there)"
        )


def jobflow_config_file() -> Path | None:
    """The jobflow settings file jobflow itself reads (``$JOBFLOW_CONFIG_FILE``, else
    ``~/.jobflow.yaml`` when it exists), or None."""
    env = os.environ.get("JOBFLOW_CONFIG_FILE")
    if env:
        return Path(env).expanduser()
    default = Path.home() / ".jobflow.yaml"
    return default if default.is_file() else None


def jobflow_job_store() -> JobStore:
    """jobflow's ``SETTINGS.JOB_STORE``, read now (not at import) from its settings file."""
    from jobflow.settings import JobflowSettings

    path = jobflow_config_file()
    where = f"JOBFLOW_CONFIG_FILE={path}" if os.environ.get("JOBFLOW_CONFIG_FILE") else str(path)
    if path is not None and not path.is_file():
        raise SpecError(f"{where}: no such jobflow settings file")
    if path is not None:
        from smoacs_flows.io import load_yaml

        data = load_yaml(path, "jobflow settings file", SpecError)
        if not isinstance(data, dict) or not data.get("JOB_STORE"):
            raise SpecError(
                f"{where}: JOB_STORE: missing (the store every worker writes job outputs to; "
                "template: stores/jobflow.yaml)"
            )
    try:
        store = JobflowSettings().JOB_STORE
    except Exception as exc:  # noqa: BLE001 - jobflow's and pydantic's errors
        raise SpecError(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    _require_data(store, where)
    _require_shared(store, where)
    return store


def describe_store(store: JobStore) -> str:
    """Where a JobStore's documents live (never credentials)."""
    from smoacs_flows.makers.launchpad import redact

    def one(s: Any) -> str:
        if isinstance(s, MontyStore):
            return f"montydb {s.database_path}"
        host = getattr(s, "host", None)
        if host is not None:
            port = getattr(s, "port", None)
            where = redact(str(host)) + (f":{port}" if port and "://" not in str(host) else "")
            return f"{type(s).__name__} {where}/{getattr(s, 'database', '?')}"
        return type(s).__name__

    return one(store.docs_store)


def resolve_job_store(source: str | Path | None = None) -> tuple[JobStore, str, str]:
    """(JobStore, origin, one line saying which store and why).

    Order: ``source`` (``--store``), ``$SMOACS_JOB_STORE``, jobflow's ``JOB_STORE`` when
    ``$JOBFLOW_CONFIG_FILE`` is set (or ``~/.jobflow.yaml`` exists), the embedded default.
    ``origin`` is one of ``option``, ``env``, ``jobflow``, ``embedded``.
    """
    from smoacs_flows.io import load_yaml

    if source:
        origin, why, path = "option", "--store", Path(source).expanduser()
    elif os.environ.get(JOB_STORE_ENV):
        origin, path = "env", Path(os.environ[JOB_STORE_ENV]).expanduser()
        why = f"{JOB_STORE_ENV}={path}"
    elif jobflow_config_file() is not None:
        store = jobflow_job_store()
        cfg = jobflow_config_file()
        why = (
            f"JOB_STORE of JOBFLOW_CONFIG_FILE={cfg}"
            if os.environ.get("JOBFLOW_CONFIG_FILE")
            else f"JOB_STORE of {cfg}"
        )
        return store, "jobflow", f"JobStore: {describe_store(store)} ({why})"
    else:
        store = embedded_job_store()
        return (
            store,
            "embedded",
            f"JobStore: {describe_store(store)} (default: no --store, {JOB_STORE_ENV} "
            "or JOBFLOW_CONFIG_FILE)",
        )
    spec = load_yaml(path, "JobStore file", SpecError)
    store = job_store_from_spec(spec, source=str(path))
    _require_shared(store, str(path))
    return store, origin, f"JobStore: {describe_store(store)} from {path} ({why})"


def load_job_store(source: str | Path | None = None) -> JobStore:
    """The JobStore from a YAML/JSON file, ``$SMOACS_JOB_STORE``, jobflow's ``JOB_STORE``
    (``$JOBFLOW_CONFIG_FILE``) or the embedded default (:func:`resolve_job_store`)."""
    return resolve_job_store(source)[0]
