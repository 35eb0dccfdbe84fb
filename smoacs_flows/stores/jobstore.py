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

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import SpecError

#: environment variable naming a JobStore YAML file (overrides the embedded default)
JOB_STORE_ENV = "SMOACS_JOB_STORE"


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


def load_job_store(source: str | Path | None = None) -> JobStore:
    """The JobStore from a YAML/JSON file, ``$SMOACS_JOB_STORE``, or the embedded default."""
    source = source or os.environ.get(JOB_STORE_ENV)
    if not source:
        return embedded_job_store()
    from smoacs_flows.io import load_yaml

    path = Path(source).expanduser()
    spec = load_yaml(path, "JobStore file", SpecError)
    return job_store_from_spec(spec, source=str(path))
