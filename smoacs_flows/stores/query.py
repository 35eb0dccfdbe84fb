"""The query API of the candidates collection: filters, query results, :func:`query`."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymatgen.core import Element, Structure

from smoacs_flows.stores.fields import FIELDS, OPS, STATES, VERDICTS, QueryError

if TYPE_CHECKING:
    from smoacs_flows.stores.results import ResultsStore


#: the smallest meaningful value of a field (a filter below it can only match nothing)
_LOWEST = {
    "nelements": 1,
    "spacegroup": 1,
    "spacegroup_initial": 1,
    "version": 1,
    "chgnet_moment": 0,  # a sum of magnitudes
}


def _reduced_formula(formula: str) -> str:
    """pymatgen's reduced formula of ``formula`` (what the store keeps)."""
    import warnings

    from pymatgen.core import Composition

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns before it fails
            comp = Composition(formula)
    except Exception:  # noqa: BLE001 - pymatgen raises several kinds on bad formulas
        comp = None
    # pymatgen reads unknown symbols (Xx) as dummy species: not a formula of elements here
    if comp is None or not comp or not all(isinstance(el, Element) for el in comp):
        raise QueryError(f"formula: {formula!r} is not a chemical formula of elements")
    return comp.reduced_formula


@dataclass
class Filter:
    """A conjunction of field comparisons plus element include/exclude lists."""

    terms: list[tuple[str, str, Any]] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def add(self, name: str, op: str, value: Any) -> None:
        """Add ``name op value`` (``op`` a Mongo operator), checking field and value."""
        if name not in FIELDS:
            raise QueryError(f"unknown filter field {name!r}; fields: {', '.join(FIELDS)}")
        typ = FIELDS[name][2]
        vals = value if op == "$in" else [value]
        conv = []
        for v in vals:
            if v is None:
                conv.append(None)
                continue
            try:
                if typ is bool and isinstance(v, str):
                    if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(v)
                    v = v.lower() in ("true", "1", "yes")
                conv.append(typ(v))
            except (TypeError, ValueError):
                raise QueryError(f"{name}: {v!r} is not a {typ.__name__}") from None
            x = conv[-1]
            if typ in (int, float) and not math.isfinite(x):
                raise QueryError(f"{name}: {v!r} is not a finite number")
            lo = _LOWEST.get(name)
            if lo is not None and x < lo and op in ("$lte", "$lt", "$eq", "$in"):
                raise QueryError(f"{name}: {v!r} is below {lo} (no candidate could match)")
        if name == "formula":  # any formula of the composition: Fe4As2 finds Fe2As
            conv = [v if v is None else _reduced_formula(v) for v in conv]
        if name == "state":
            bad = [v for v in conv if v not in STATES]
            if bad:
                raise QueryError(f"state: {bad[0]!r} is not one of {', '.join(STATES)}")
        if name == "verdict":
            bad = [v for v in conv if v is not None and v not in VERDICTS]
            if bad:
                raise QueryError(f"verdict: {bad[0]!r} is not one of {', '.join(VERDICTS)}")
        self.terms.append((name, op, conv if op == "$in" else conv[0]))

    def add_elements(self, include: list[str] | None, exclude: list[str] | None) -> None:
        """Elements every match must contain / must not contain (symbols checked)."""
        for which, els in (("include", include), ("exclude", exclude)):
            for el in els or []:
                if not Element.is_valid_symbol(el):
                    raise QueryError(f"{which}: {el!r} is not an element symbol")
                getattr(self, which).append(el)

    def add_where(self, expr: str) -> None:
        """Parse ``FIELD<=VALUE`` (also ``<``, ``>``, ``>=``, ``=``, ``!=``; ``=a|b`` for any)."""
        m = re.fullmatch(r"\s*([A-Za-z_]+)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*", expr)
        if not m:
            raise QueryError(
                f"--where {expr!r}: expected FIELD<=VALUE (operators {', '.join(OPS)})"
            )
        name, op, raw = m.groups()
        if raw == "":
            raise QueryError(f"--where {expr!r}: no value")
        value: Any = None if raw.lower() in ("none", "null") else raw
        if op == "=" and value is not None and "|" in raw:
            self.add(name, "$in", raw.split("|"))
        else:
            self.add(name, OPS[op], value)

    def mongo(self) -> dict[str, Any]:
        """The filter as a MongoDB query."""
        q: dict[str, Any] = defaultdict(dict)
        for name, op, value in self.terms:
            q[FIELDS[name][0]][op] = value
        if self.include:
            q["elements"]["$all"] = list(self.include)
        if self.exclude:
            q["elements"]["$nin"] = list(self.exclude)
        return dict(q)


# ----------------------------------------------------------------------------- the store


@dataclass
class Candidate:
    """One query result: the summary row, the final structure, and the full document."""

    candidate_id: str
    summary: dict[str, Any]
    structure: Structure | None
    _store: ResultsStore | None = None

    @property
    def doc(self) -> dict[str, Any]:
        """The full candidate document (read from the store on first use)."""
        if not hasattr(self, "_doc"):
            assert self._store is not None
            self._doc = self._store.get(self.candidate_id, self.summary.get("version"))
        return self._doc


def spacegroup_number(value: int | str) -> int:
    """The international number of a space group given as a number (1–230) or as a
    Hermann–Mauguin symbol (``Fm-3m``, ``P6_3mc``; pymatgen's ``SpaceGroup`` reads it)."""
    text = str(value).strip()
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= 230:
            raise QueryError(f"--spacegroup: {text} is not a space-group number (1-230)")
        return n
    from pymatgen.symmetry.groups import SpaceGroup

    try:
        return int(SpaceGroup(text).int_number)
    except Exception:  # noqa: BLE001 - pymatgen raises ValueError/KeyError for unknown symbols
        raise QueryError(
            f"--spacegroup: {text!r} is neither a number (1-230) nor a Hermann-Mauguin symbol "
            "such as Fm-3m or P6_3mc"
        ) from None


def query(
    campaign: str | None = None,
    version: int | None = None,
    verdict: str | None = None,
    e_hull_max: float | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    max_elements: int | None = None,
    polarisation_min: float | None = None,
    moment_min: float | None = None,
    moment_max: float | None = None,
    chgnet_moment_min: float | None = None,
    chgnet_moment_max: float | None = None,
    formula: str | None = None,
    spacegroup: int | str | None = None,
    stable: bool | None = None,
    unique: bool | None = None,
    novel: bool | None = None,
    sun: bool | None = None,
    state: str | None = None,
    where: list[str] | None = None,
    sort: str | None = "e_above_hull",
    descending: bool = False,
    limit: int | None = None,
    results: ResultsStore | None = None,
) -> list[Candidate]:
    """Candidates of the results store as :class:`Candidate` objects (pymatgen structures).

    ``campaign`` None covers every campaign (latest version of each); ``where`` takes
    ``FIELD<=VALUE`` expressions over :data:`FIELDS`; ``polarisation_min`` applies to |P|;
    ``formula`` matches by reduced formula (``Fe4As2`` finds Fe2As); ``chgnet_moment_*`` bound
    CHGNet's Σ|m_i| per formula unit of the relaxed structure; ``spacegroup`` (a number or a
    Hermann–Mauguin symbol) is the relaxed structure's space group (spglib, symprec 0.1 Å).
    """
    flt = Filter()
    for name, op, v in (
        ("verdict", "$eq", verdict),
        ("e_above_hull", "$lte", e_hull_max),
        ("nelements", "$lte", max_elements),
        ("polarisation", "$gte", polarisation_min),
        ("moment_per_fu", "$gte", moment_min),
        ("moment_per_fu", "$lte", moment_max),
        ("chgnet_moment", "$gte", chgnet_moment_min),
        ("chgnet_moment", "$lte", chgnet_moment_max),
        ("formula", "$eq", formula),
        ("spacegroup", "$eq", None if spacegroup is None else spacegroup_number(spacegroup)),
        ("stable", "$eq", stable),
        ("unique", "$eq", unique),
        ("novel", "$eq", novel),
        ("sun", "$eq", sun),
        ("state", "$eq", state),
    ):
        if v is not None:
            flt.add(name, op, v)
    flt.add_elements(include, exclude)
    for w in where or []:
        flt.add_where(w)
    if results is None:
        from smoacs_flows.stores.results import load_results_store

        results = load_results_store()
    results.connect()  # left open: Candidate.doc reads from it
    return results.find(flt, results.versions(campaign, version), sort, descending, limit)
