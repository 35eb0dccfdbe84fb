"""Structure tables for ``smoacs-flows train`` / ``predict``: CSV or JSON / JSON-lines
(optionally ``.gz``), one structure per row (a CIF string or a pymatgen ``Structure.as_dict()``)
and a numeric target column; bad rows are reported by row number and skipped."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.base import N_ELEMENTS

#: structure columns tried in order when none is given
STRUCTURE_COLUMNS = ("cif", "structure", "atoms")
#: id columns tried in order when none is given
ID_COLUMNS = ("material_id", "id", "jid", "mp_id")


@dataclass
class Dataset:
    """Parsed rows of a structure table."""

    path: str
    sha256: str
    n_rows: int
    ids: list[str]
    rows: list[int]  # 1-based data-row numbers of the kept rows
    structures: list[Any]  # pymatgen Structures
    targets: np.ndarray
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> row numbers


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV, JSON (list of objects, or ``{column: {row: value}}``) or JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise InputError(f"{path}: not a gzip file ({exc})") from None
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); expected CSV, JSON or JSON lines"
        ) from None
    if name.endswith(".csv"):
        csv.field_size_limit(sys.maxsize)
        return list(csv.DictReader(io.StringIO(text)))
    if name.endswith((".jsonl", ".ndjson")):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        return rows
    if name.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg})") from None
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            keys = list(next(iter(data.values())).keys())  # pandas "columns" orientation
            return [{c: data[c].get(k) for c in data} for k in keys]
        raise InputError(f"{path}: JSON must be a list of row objects")
    raise InputError(f"{path}: unsupported format (use .csv, .json, .jsonl, optionally .gz)")


def parse_structure(value: Any):
    """A pymatgen Structure from a CIF string or a ``Structure.as_dict()`` (dict or JSON)."""
    import warnings

    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, dict):
        s = Structure.from_dict(value)
    elif isinstance(value, str) and value.strip():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structs = CifParser.from_str(value).parse_structures(primitive=False)
        if not structs:
            raise ValueError("no structure in CIF")
        s = structs[0]
    else:
        raise ValueError("empty structure field")
    if not s.is_ordered:
        raise ValueError("disordered structure")
    zs = [site.specie.Z for site in s]
    if min(zs) < 1 or max(zs) > N_ELEMENTS:
        raise ValueError(f"element outside Z=1..{N_ELEMENTS}")
    if s.volume <= 1e-6:
        raise ValueError("degenerate lattice")
    return s


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str):
    if wanted is not None:
        if wanted not in columns:
            raise InputError(
                f"{what} column {wanted!r} not found; columns are {', '.join(map(str, columns))}"
            )
        return wanted
    for c in candidates:
        if c in columns:
            return c
    return None


def _ranges(rows: list[int], n: int = 20) -> str:
    shown = ", ".join(map(str, rows[:n]))
    return shown + (f", … (+{len(rows) - n})" if len(rows) > n else "")


def load_dataset(
    path: str | Path,
    target: str,
    structure_col: str | None = None,
    id_col: str | None = None,
    max_bad_frac: float = 0.05,
    limit: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Dataset:
    """Parse a structure table; skip and report bad rows; abort above ``max_bad_frac``."""
    table = read_table(path)
    if not table:
        raise InputError(f"{path}: no rows")
    columns = list(table[0].keys())
    if target not in columns:
        raise InputError(
            f"{path}: target column {target!r} not found; columns are {', '.join(columns)}"
        )
    scol = _pick(columns, structure_col, STRUCTURE_COLUMNS, "structure")
    if scol is None:
        raise InputError(
            f"{path}: no structure column (tried {', '.join(STRUCTURE_COLUMNS)}); "
            "pass --structure-col"
        )
    icol = _pick(columns, id_col, ID_COLUMNS, "id")
    if limit is not None:
        table = table[:limit]
    ids, rows, structs, ys = [], [], [], []
    skipped: dict[str, list[int]] = {"unparsable structure": [], "missing or NaN target": []}
    for i, row in enumerate(table, 1):
        try:
            y = float(row.get(target))
        except (TypeError, ValueError):
            y = math.nan
        if not math.isfinite(y):
            skipped["missing or NaN target"].append(i)
            continue
        try:
            s = parse_structure(row.get(scol))
        except Exception:  # any parser failure is a bad row, reported below
            skipped["unparsable structure"].append(i)
            continue
        ids.append(str(row.get(icol)) if icol else str(i))
        rows.append(i)
        structs.append(s)
        ys.append(y)
    skipped = {k: v for k, v in skipped.items() if v}
    n_bad = sum(len(v) for v in skipped.values())
    detail = "; ".join(f"{k}: {len(v)} rows ({_ranges(v)})" for k, v in skipped.items())
    if n_bad and (n_bad > max_bad_frac * len(table) or not structs):
        raise InputError(
            f"{path}: {n_bad} of {len(table)} rows are bad (limit {max_bad_frac:.0%}): {detail}"
        )
    if n_bad and warn:
        warn(f"{path}: skipped {n_bad} of {len(table)} rows: {detail}")
    return Dataset(
        path=str(path),
        sha256=file_sha256(path),
        n_rows=len(table),
        ids=ids,
        rows=rows,
        structures=structs,
        targets=np.asarray(ys, dtype=float),
        skipped=skipped,
    )
