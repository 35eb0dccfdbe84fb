"""Templates from the Materials Project (mp-api), cached on disk with their provenance.

``templates: [{source: mp, max_sites: 30, n: 8192, criteria: {...}}]`` asks the Materials
Project summary endpoint for every material with at most ``max_sites`` sites that meets
``criteria`` (keyword arguments of mp-api's ``materials.summary.search``), draws ``n`` of them
with the campaign seed, and fetches their structures. The result is written once to
``$SMOACS_HOME/templates/mp/<query digest>.json.gz`` (or ``cache:``) with the material ids, the
database version, the endpoint, the query and the date; later runs read only that file.

The API key comes from ``MP_API_KEY`` in the environment and is never logged, stored or put
in an error message. ``MP_API_ENDPOINT`` (mp-api's own setting) points at another server.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.io import atomic_write_bytes
from smoacs_flows.smoacs.templates import Template

#: fields asked for in the id query and in the structure query
_ID_FIELDS = ["material_id"]
_STRUCT_FIELDS = ["material_id", "structure"]
#: material ids per structure request
_CHUNK = 500


def query_of(max_sites: int | None, n: int | None, criteria: dict[str, Any] | None, seed: int):
    """The canonical query (what the cache file is keyed on)."""
    return {
        "max_sites": max_sites,
        "n": n,
        "criteria": dict(sorted((criteria or {}).items())),
        "seed": seed,
    }


def check_criteria(criteria: dict[str, Any] | None, where: str) -> None:
    """Every criterion is a keyword of mp-api's ``materials.summary.search`` (no network)."""
    import inspect

    from mp_api.client.routes.materials.summary import SummaryRester

    params = inspect.signature(SummaryRester.search).parameters
    allowed = {k for k in params if k not in ("self", "fields", "all_fields", "num_chunks")}
    for key in criteria or {}:
        if key not in allowed or key in ("chunk_size", "material_ids"):
            raise SpecError(
                f"{where}.criteria.{key}: not a criterion of the Materials Project summary "
                f"search (e.g. {', '.join(sorted(allowed)[:12])}, ...)"
            )


def cache_path(query: dict[str, Any], cache: str | Path | None = None) -> Path:
    """Where the download for ``query`` lives (``cache`` overrides the default)."""
    if cache is not None:
        return Path(cache).expanduser()
    from smoacs_flows.config import smoacs_home_path

    # the path only: the home is created when the download is written, not when it is looked up
    digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]
    return smoacs_home_path() / "templates" / "mp" / f"{digest}.json.gz"


def read_cache(path: Path, where: str) -> dict[str, Any]:
    """A cache file's ``{"provenance", "structures"}``; errors name the file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        data["provenance"]["material_ids"]  # noqa: B018 - shape check
        data["structures"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{where}: Materials Project template cache {path} is unreadable ({exc}); delete it "
            "to download again"
        ) from None
    return data


def _no_key_error(where: str, path: Path) -> InputError:
    return InputError(
        f"{where}: source mp needs MP_API_KEY in the environment (create a key at "
        "https://next-gen.materialsproject.org/api and `export MP_API_KEY=<your key>`; it is "
        f"read from the environment only, never stored) or the cached download {path} (copy "
        "it from a machine that downloaded it)"
    )


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def download(query: dict[str, Any], key: str, endpoint: str | None, where: str) -> dict[str, Any]:
    """Ask the Materials Project; returns ``{"provenance", "structures"}``."""
    import warnings

    from mp_api.client import MPRester

    criteria = dict(query["criteria"])
    if query["max_sites"] is not None and "num_sites" not in criteria:
        criteria["num_sites"] = (1, int(query["max_sites"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mp-api version notices are not ours to print
        with MPRester(api_key=key, endpoint=endpoint, mute_progress_bars=True) as mpr:
            docs = mpr.materials.summary.search(**criteria, fields=_ID_FIELDS)
            ids = sorted({str(d.material_id) for d in docs}, key=_id_order)
            n_match = len(ids)
            if not ids:
                raise InputError(
                    f"{where}: the Materials Project has no material matching {criteria}"
                )
            n = query["n"]
            if n is not None and n < len(ids):
                rng = np.random.default_rng(query["seed"])
                ids = sorted(rng.choice(ids, size=n, replace=False).tolist(), key=_id_order)
            structures: dict[str, Any] = {}
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                for d in mpr.materials.summary.search(material_ids=part, fields=_STRUCT_FIELDS):
                    s = d.structure
                    structures[str(d.material_id)] = s.as_dict() if hasattr(s, "as_dict") else s
            version = getattr(mpr, "db_version", None)
            ep = mpr.endpoint
    missing = [m for m in ids if m not in structures]
    if missing:
        raise InputError(
            f"{where}: the Materials Project returned no structure for {len(missing)} "
            f"material(s), e.g. {missing[:3]}"
        )
    provenance = {
        "source": "Materials Project (mp-api materials.summary)",
        "endpoint": ep,
        "database_version": version,
        "retrieved": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "query": {**query, "criteria": {k: _jsonable(v) for k, v in criteria.items()}},
        "n_matching": n_match,
        "material_ids": ids,
    }
    return {"provenance": provenance, "structures": structures}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _id_order(mid: str) -> tuple[str, int, str]:
    prefix, _, num = mid.partition("-")
    return (prefix, int(num), mid) if num.isdigit() else (prefix, -1, mid)


def fetch_mp_templates(
    max_sites: int | None,
    n: int | None,
    criteria: dict[str, Any] | None,
    seed: int,
    cache: str | Path | None = None,
    where: str = "templates",
    allow_download: bool = True,
) -> tuple[list[Template], dict[str, Any]] | None:
    """Templates and provenance from the cache, else downloaded (then cached).

    Returns None when nothing is cached and ``allow_download`` is False (validation before a
    run on a machine without the network). Raises :class:`InputError` naming ``MP_API_KEY``
    and the cache path when there is no cache and no key, or the download fails.
    """
    check_criteria(criteria, where)
    query = query_of(max_sites, n, criteria, seed)
    path = cache_path(query, cache)
    if path.is_file():
        data = read_cache(path, where)
    elif not allow_download:
        return None
    else:
        key = os.environ.get("MP_API_KEY", "").strip()
        if not key:
            raise _no_key_error(where, path)
        endpoint = os.environ.get("MP_API_ENDPOINT") or None
        try:
            data = download(query, key, endpoint, where)
        except (SpecError, InputError):
            raise
        except Exception as exc:  # noqa: BLE001 - network / server errors of any kind
            msg = _scrub(f"{type(exc).__name__}: {exc}", key).splitlines()[0][:300]
            raise InputError(
                f"{where}: cannot download templates from the Materials Project ({msg}); run "
                f"where the network allows (MP_API_KEY set) so the download is cached at {path}, "
                "or copy that file here"
            ) from None
        payload = json.dumps(data).encode()
        atomic_write_bytes(path, gzip.compress(payload))
    prov = data["provenance"]
    prov["cache"] = str(path)
    out = []
    for mid in prov["material_ids"]:
        s = Structure.from_dict(data["structures"][mid])
        s = Structure(s.lattice, [site.species.elements[0] for site in s], s.frac_coords)
        meta = {"kind": "mp", "material_id": mid, "database_version": prov["database_version"]}
        out.append(Template(id=mid, structure=s, meta=meta))
    return out, prov
