"""The candidates collection's queryable fields, shared by the query index, the query API and
the builder: name → (document path, SQL column, type), and the flat summary row of a document.
"""

from __future__ import annotations

import typing
from typing import Any

from smoacs_flows.dft.schema import Verdict
from smoacs_flows.errors import SmoacsError

STAGE_KEYS = ("propose", "prefilter", "relax", "sun", "dft", "summary")
STATES = ("pending", "failed", "done")
VERDICTS: tuple[str, ...] = typing.get_args(Verdict)

#: queryable fields: name -> (document path, SQL column, type)
FIELDS: dict[str, tuple[str, str, type]] = {
    "candidate_id": ("candidate_id", "candidate_id", str),
    "campaign": ("campaign", "campaign", str),
    "version": ("version", "version", int),
    "state": ("state", "state", str),
    "stage": ("stage", "stage", str),
    "formula": ("reduced_formula", "formula", str),
    "template": ("template", "template", str),
    "batch": ("batch", "batch", int),
    "nelements": ("nelements", "nelements", int),
    "natoms": ("natoms", "natoms", int),
    "loss": ("smoacs.losses.total", "loss", float),
    "mlip_energy_per_atom": ("relax.energy_per_atom", "mlip_energy_per_atom", float),
    "e_above_hull": ("e_above_hull", "e_above_hull", float),
    "hull": ("hull", "hull", str),
    "spacegroup": ("relax.spacegroup_relaxed.number", "spacegroup", int),
    "spacegroup_initial": ("relax.spacegroup_initial.number", "spacegroup_initial", int),
    "prototype_kept": ("relax.prototype_kept", "prototype_kept", bool),
    # CHGNet Σ|m_i| of the relaxed structure per formula unit (μB), beside the DFT moment
    "chgnet_moment": ("relax.chgnet_moment_per_fu", "chgnet_moment", float),
    "stable": ("sun.stable", "stable", bool),
    "unique": ("sun.unique", "unique_", bool),
    "novel": ("sun.novel", "novel", bool),
    "sun": ("sun.sun", "sun", bool),
    "engine": ("dft.engine", "engine", str),
    "verdict": ("dft.verdict", "verdict", str),
    "polarisation": ("dft.abs_polarisation", "polarisation", float),
    "moment_per_fu": ("dft.moment_per_fu", "moment_per_fu", float),
    "total_moment": ("dft.total_moment", "total_moment", float),
    "gap_up": ("dft.gap_up", "gap_up", float),
    "gap_down": ("dft.gap_down", "gap_down", float),
    "half_metallic_gap": ("dft.half_metallic_gap", "half_metallic_gap", float),
    "dft_e_above_hull": ("dft.e_above_hull", "dft_e_above_hull", float),
}
OPS = {"=": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
SQL_OPS = {"$eq": "=", "$ne": "!=", "$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}


class QueryError(SmoacsError):
    """A query the store cannot answer (unknown field, element, campaign, bad value)."""


def get_path(doc: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a nested document (None when absent)."""
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def summary_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The flat summary of a candidate document (table, CSV and JSON output)."""
    row = {name: get_path(doc, path) for name, (path, _, _) in FIELDS.items()}
    row["polarisation"] = get_path(doc, "dft.polarisation")
    row["elements"] = list(doc.get("elements") or [])
    row["rejected"] = "; ".join((doc.get("rejected") or {}).get("reasons") or []) or None
    row["rejected_stage"] = (doc.get("rejected") or {}).get("stage")
    row["failure"] = (doc.get("failure") or {}).get("reason")
    return row


def sql_value(v: Any) -> Any:
    """A value as SQLite stores it (booleans as 0/1)."""
    return int(v) if isinstance(v, bool) else v
