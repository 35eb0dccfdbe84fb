"""Fields the campaign report reads from candidate documents (missing or odd values tolerated).

Pure functions over the documents of :mod:`smoacs_flows.stores.candidates`; the charts are in
:mod:`smoacs_flows.stores.report_charts`, the page in :mod:`smoacs_flows.stores.report`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from smoacs_flows.stores.candidates import FUNNEL

#: funnel steps of :func:`funnel_counts`: (label, furthest stage needed or None)
FUNNEL_STEPS: list[tuple[str, str | None]] = [
    ("proposed", "proposed"),
    ("prefiltered", "prefiltered"),
    ("relaxed", "relaxed"),
    ("stable", "stable"),
    ("S.U.N.", "sun"),
    ("DFT", "dft"),
    ("half-metal", None),
]

_RANK = {s: i for i, s in enumerate(FUNNEL)}


def num(v: Any) -> float | None:
    """``v`` as a finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_dict(v: Any) -> dict[str, Any]:
    """``v`` if it is a dict, else an empty one (for reading nested records)."""
    return v if isinstance(v, dict) else {}


def _stage_rank(doc: dict[str, Any]) -> int:
    return _RANK.get(doc.get("stage"), 0) if isinstance(doc.get("stage"), str) else 0


def is_half_metal(doc: dict[str, Any]) -> bool:
    """Whether DFT called the candidate a half-metal."""
    return as_dict(doc.get("dft")).get("verdict") == "half_metal"


def funnel_counts(docs: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
    """The screening funnel of ``docs``: ``[(label, count), ...]`` in the order proposed →
    prefiltered → relaxed → S.U.N. → DFT → half-metal.

    A candidate counts at every step up to the furthest stage it reached (its ``stage``;
    unknown or missing counts as ``proposed``); half-metals are those with
    ``dft.verdict == "half_metal"``.
    """
    docs = [d for d in docs if isinstance(d, dict)]
    counts = dict.fromkeys((label for label, _ in FUNNEL_STEPS), 0)
    for doc in docs:
        rank = _stage_rank(doc)
        for label, stage in FUNNEL_STEPS:
            if stage is None:
                counts[label] += is_half_metal(doc)
            elif rank >= _RANK[stage]:
                counts[label] += 1
    if not any(d.get("hull") for d in docs):
        counts.pop("stable")  # no hull: stability was not evaluated
    name = sun_step_label(docs)
    return [(name if label == "S.U.N." else label, n) for label, n in counts.items()]


def sun_step_label(docs: list[dict[str, Any]]) -> str:
    """The funnel's S.U.N. step named by what was applied to the candidates that passed it:
    "S.U.N." only when they were judged on a compound hull and checked for novelty."""
    from smoacs_flows.screening.prototype_hull import sun_label

    passed = [d for d in docs if d.get("stage") in ("sun", "dft")]
    hulls = {d["hull"] for d in docs if isinstance(d.get("hull"), str)}
    if not hulls:  # no reference phases configured: nothing but uniqueness was applied
        screened = any(d.get("sun") for d in docs)
        return "passed (no stability or novelty filter)" if screened else "S.U.N."
    elements_only = any("elements only" in h and "prototype" not in h for h in hulls)
    novel_checked = all(as_dict(d.get("sun")).get("novel") is not None for d in passed)
    return sun_label(elements_only, novel_checked)


def _elements(doc: dict[str, Any]) -> set[str]:
    els = doc.get("elements")
    return {e for e in els if isinstance(e, str)} if isinstance(els, list | tuple) else set()


def element_frequency(docs: list[dict[str, Any]]) -> dict[str, float]:
    """``{element: fraction of docs containing it}``."""
    n = sum(1 for d in docs if isinstance(d, dict))
    c: Counter[str] = Counter()
    for d in docs:
        if isinstance(d, dict):
            c.update(_elements(d))
    return {el: k / n for el, k in c.items()} if n else {}


def nelements(doc: dict[str, Any]) -> int | None:
    """The number of elements of the candidate (its ``nelements``, else counted), or None."""
    n = doc.get("nelements")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    return len(_elements(doc)) or None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def predicted_gap(doc: dict[str, Any]) -> float | None:
    """The smallest predicted band gap of the SMOACS record (any ``*band_gap`` key)."""
    pred = _flatten(as_dict(doc.get("smoacs")).get("predicted"))
    vals = [num(v) for k, v in pred.items() if k.lower().endswith(("band_gap", "bandgap"))]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def formula(doc: dict[str, Any]) -> str:
    """The candidate's reduced formula (empty if unknown)."""
    return str(
        doc.get("reduced_formula")
        or doc.get("formula")
        or as_dict(doc.get("dft")).get("reduced_formula")
        or ""
    )


def e_hull(doc: dict[str, Any]) -> float | None:
    """Energy above hull (eV/atom) of the candidate, the DFT record's as fallback."""
    v = num(doc.get("e_above_hull"))
    return v if v is not None else num(as_dict(doc.get("dft")).get("e_above_hull"))


def cif_text(doc: dict[str, Any]) -> str | None:
    """The CIF of the candidate's final structure (proposal as fallback), or None."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    for key in ("final_structure", "structure"):
        sd = doc.get(key)
        if isinstance(sd, dict) and sd.get("sites"):
            try:
                return str(CifWriter(Structure.from_dict(sd)))
            except Exception:  # noqa: BLE001 - a broken structure only loses its link
                continue
    return None
