"""The results store: the candidates collection, its incremental builder, and queries.

``ResultsStore`` holds three things:

- ``candidates`` (maggma Store, key ``candidate_id``): one document per candidate
  (:mod:`smoacs_flows.stores.candidates`); montydb under ``$SMOACS_HOME/results`` by default,
  MongoDB on clusters (indexes on every query field).
- ``sources`` (maggma Store, key ``key``): the builder's ledger, one small document per processed
  job output (its completion time) and one per campaign version (the signature of its DFT
  fireworks' states); ``sections`` (same key) holds the sections each job output contributed,
  apart, so that checking what changed never reads them.
- for montydb only, a SQLite query index beside it (``candidates_index.sqlite``): montydb has no
  indexes and filters every document in Python (about 1.5 s per query at 50,000 candidates),
  so queries run on the index and return each candidate's summary and final structure from it.

``CandidatesBuilder`` (a maggma Builder) processes only job outputs that are new or changed since
the last run (and campaigns whose DFT fireworks changed state on the LaunchPad), and writes the
index last, then the ledger: interrupted anywhere, a rerun finishes the work and loses nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import typing
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maggma.core import Builder, Store
from pymatgen.core import Element, Structure

from smoacs_flows.config import smoacs_home
from smoacs_flows.dft.schema import Verdict
from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.stores.candidates import assemble, extract_sections, merge_sections, tag_version

#: environment variable naming a results-store YAML (default: embedded montydb)
RESULTS_STORE_ENV = "SMOACS_RESULTS_STORE"
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


# ----------------------------------------------------------------------------- helpers


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def summary_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The flat summary of a candidate document (table, CSV and JSON output)."""
    row = {name: _get(doc, path) for name, (path, _, _) in FIELDS.items()}
    row["polarisation"] = _get(doc, "dft.polarisation")
    row["elements"] = list(doc.get("elements") or [])
    row["rejected"] = "; ".join((doc.get("rejected") or {}).get("reasons") or []) or None
    row["rejected_stage"] = (doc.get("rejected") or {}).get("stage")
    row["failure"] = (doc.get("failure") or {}).get("reason")
    return row


def _sql_value(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v


def _monty_exists(store: Store) -> bool:
    """Whether a montydb collection has been created (its sqlite file opens on first write)."""
    coll = store._collection
    return coll.name in coll.database.list_collection_names()


def _bulk_replace(store: Store, docs: list[dict[str, Any]], scope: dict[str, Any]) -> None:
    """Replace every document matching ``scope`` by ``docs`` (bulk on montydb, upsert on
    MongoDB: maggma's MontyStore.update is one full scan per document)."""
    from maggma.stores import MontyStore

    if isinstance(store, MontyStore):
        if _monty_exists(store):
            store._collection.delete_many(scope)
        if docs:
            store._collection.insert_many([dict(d) for d in docs])
        return
    keep = {d[store.key] for d in docs}
    if docs:
        store.update(docs)
    stale = [
        d[store.key] for d in store.query(scope, properties=[store.key]) if d[store.key] not in keep
    ]
    if stale:
        store.remove_docs({store.key: {"$in": stale}})


# ----------------------------------------------------------------------------- SQLite index


class QueryIndex:
    """The SQLite query index of an embedded candidates store (one row per candidate)."""

    COLUMNS = [c for _, c, _ in FIELDS.values()]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60)
        cols = ", ".join(
            f"{c} {'TEXT' if c in ('candidate_id',) else ''}"
            for c in self.COLUMNS
            if c != "candidate_id"
        )
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS candidates (candidate_id TEXT PRIMARY KEY, {cols}, "
            "elements TEXT, content_hash TEXT, row TEXT, structure TEXT)"
        )
        for c in (
            "campaign, version",
            "state",
            "verdict",
            "e_above_hull",
            "nelements",
            "polarisation",
            "moment_per_fu",
        ):
            name = "ix_" + re.sub(r"\W+", "_", c)
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON candidates ({c})")
        self.conn.commit()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def hashes(self, campaign: str, version: int) -> dict[str, str]:
        """``{candidate_id: content_hash}`` of one campaign version."""
        cur = self.conn.execute(
            "SELECT candidate_id, content_hash FROM candidates WHERE campaign=? AND version=?",
            (campaign, version),
        )
        return dict(cur.fetchall())

    def replace(self, campaign: str, version: int, docs: list[dict[str, Any]]) -> None:
        """Replace the rows of one campaign version, in one transaction."""
        rows = []
        for d in docs:
            r = summary_row(d)
            vals = [_sql_value(_get(d, path)) for path, _, _ in FIELDS.values()]
            rows.append(
                (
                    *vals,
                    "," + ",".join(d.get("elements") or []) + ",",
                    d["content_hash"],
                    json.dumps(r),
                    json.dumps(d.get("final_structure")),
                )
            )
        marks = ", ".join("?" * (len(self.COLUMNS) + 4))
        with self.conn:
            self.conn.execute(
                "DELETE FROM candidates WHERE campaign=? AND version=?", (campaign, version)
            )
            self.conn.executemany(
                f"INSERT INTO candidates ({', '.join(self.COLUMNS)}, elements, content_hash, "
                f"row, structure) VALUES ({marks})",
                rows,
            )

    def campaigns(self) -> dict[str, int]:
        """``{campaign: latest version}``."""
        cur = self.conn.execute("SELECT campaign, MAX(version) FROM candidates GROUP BY campaign")
        return dict(cur.fetchall())

    def select(
        self,
        flt: Filter,
        sort: str | None,
        descending: bool,
        limit: int | None,
        versions: dict[str, int],
    ) -> list[tuple[dict[str, Any], str]]:
        """(summary row, structure JSON) of the matching candidates."""
        where, args = [], []
        if versions:
            where.append("(" + " OR ".join("(campaign=? AND version=?)" for _ in versions) + ")")
            for c, v in versions.items():
                args += [c, v]
        for name, op, value in flt.terms:
            col = FIELDS[name][1]
            if op == "$in":
                where.append(f"{col} IN ({', '.join('?' * len(value))})")
                args += [_sql_value(v) for v in value]
            elif value is None:
                where.append(f"{col} IS {'NOT ' if op == '$ne' else ''}NULL")
            else:
                where.append(f"{col} {SQL_OPS[op]} ?")
                args.append(_sql_value(value))
        for el in flt.include:
            where.append("elements LIKE ?")
            args.append(f"%,{el},%")
        for el in flt.exclude:
            where.append("elements NOT LIKE ?")
            args.append(f"%,{el},%")
        sql = "SELECT row, structure FROM candidates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if sort:
            col = FIELDS[sort][1]
            sql += f" ORDER BY {col} IS NULL, {col} {'DESC' if descending else 'ASC'}, candidate_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [(json.loads(r), s) for r, s in self.conn.execute(sql, args)]


# ----------------------------------------------------------------------------- filters


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
            self._doc = self._store.get(self.candidate_id)
        return self._doc


class ResultsStore:
    """Candidates collection + builder ledger (+ SQLite query index for montydb)."""

    def __init__(
        self,
        candidates: Store,
        sources: Store,
        sections: Store,
        index_path: str | Path | None = None,
        where: str = "",
    ) -> None:
        self.candidates = candidates
        self.sources = sources
        self.sections = sections
        self.index_path = Path(index_path) if index_path else None
        self.where = where
        self.index: QueryIndex | None = None
        self._connected = False

    # ---- lifecycle
    def connect(self) -> ResultsStore:
        """Connect the stores (an unreachable MongoDB is a one-line error naming it);
        a no-op when connected."""
        if self._connected:
            return self
        try:
            self.candidates.connect()
            self.sources.connect()
            self.sections.connect()
            if self.index_path is None:
                for name, (path, _, _) in FIELDS.items():
                    if name != "candidate_id":
                        self.candidates.ensure_index(path)
                self.candidates.ensure_index("elements")
        except Exception as exc:  # noqa: BLE001 - pymongo errors
            from smoacs_flows.makers.launchpad import redact

            host = getattr(self.candidates, "host", "")
            raise SmoacsError(
                f"cannot reach the results store {self.where}"
                + (f" (host {redact(host)}:{getattr(self.candidates, 'port', '')})" if host else "")
                + f": {type(exc).__name__}: {redact(str(exc).split(',')[0])[:160]}"
            ) from None
        if self.index_path is not None:
            self.index = QueryIndex(self.index_path)
        self._connected = True
        return self

    def close(self) -> None:
        """Close every connection."""
        self.candidates.close()
        self.sources.close()
        self.sections.close()
        if self.index is not None:
            self.index.close()
            self.index = None
        self._connected = False

    def __enter__(self) -> ResultsStore:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading
    def get(self, candidate_id: str) -> dict[str, Any]:
        """The full document of one candidate."""
        doc = self.candidates.query_one({"candidate_id": candidate_id})
        if doc is None:
            raise QueryError(f"unknown candidate {candidate_id!r}")
        doc.pop("_id", None)
        return doc

    def campaigns(self) -> dict[str, int]:
        """``{campaign: latest version}`` of the candidates stored."""
        if self.index is not None:
            return self.index.campaigns()
        out: dict[str, int] = {}
        for d in self.candidates.query({}, properties=["campaign", "version"]):
            out[d["campaign"]] = max(out.get(d["campaign"], 0), int(d["version"]))
        return out

    def versions(self, campaign: str | None, version: int | None) -> dict[str, int]:
        """The (campaign, version) pairs a query covers: the latest of each by default."""
        known = self.campaigns()
        if campaign is None:
            if version is not None:
                raise QueryError("version: give a campaign with it")
            return known
        if campaign not in known:
            raise QueryError(
                f"unknown campaign {campaign!r} in the results store "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
        return {campaign: version if version is not None else known[campaign]}

    def find(
        self,
        flt: Filter,
        versions: dict[str, int],
        sort: str | None = "e_above_hull",
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Candidate]:
        """Candidates matching ``flt`` within ``versions``, sorted (missing values last)."""
        if sort is not None and sort not in FIELDS:
            raise QueryError(f"sort: unknown field {sort!r}; fields: {', '.join(FIELDS)}")
        if not versions:
            return []
        if self.index is not None:
            rows = self.index.select(flt, sort, descending, limit, versions)
            return [
                Candidate(
                    r["candidate_id"],
                    r,
                    Structure.from_dict(json.loads(s)) if s and s != "null" else None,
                    self,
                )
                for r, s in rows
            ]
        q = flt.mongo()
        scope = [{"campaign": c, "version": v} for c, v in versions.items()]
        q = {"$and": [q, {"$or": scope}]} if q else {"$or": scope}
        docs = list(self.candidates.query(q))
        if sort is not None:
            path = FIELDS[sort][0]
            have = [d for d in docs if _get(d, path) is not None]
            none = [d for d in docs if _get(d, path) is None]
            have.sort(key=lambda d: (_get(d, path), d["candidate_id"]), reverse=descending)
            docs = have + sorted(none, key=lambda d: d["candidate_id"])
        docs = docs[:limit] if limit else docs
        out = []
        for d in docs:
            d.pop("_id", None)
            s = d.get("final_structure")
            c = Candidate(
                d["candidate_id"], summary_row(d), Structure.from_dict(s) if s else None, self
            )
            c._doc = d
            out.append(c)
        return out

    # ---- building
    def builder(
        self, job_store: Store, launchpad: Any = None, campaigns: list[str] | None = None
    ) -> CandidatesBuilder:
        """The incremental builder from a JobStore (and a LaunchPad, for failures)."""
        return CandidatesBuilder(job_store, self, launchpad=launchpad, campaigns=campaigns)


def embedded_results_store(path: str | Path | None = None) -> ResultsStore:
    """montydb candidates + ledger under ``$SMOACS_HOME/results`` with its SQLite index."""
    from maggma.stores import MontyStore

    path = Path(path) if path else smoacs_home() / "results"
    path.mkdir(parents=True, exist_ok=True)
    kw = {"database_path": str(path.resolve()), "database_name": "smoacs_results"}
    return ResultsStore(
        MontyStore("candidates", key="candidate_id", **kw),
        MontyStore("candidate_sources", key="key", **kw),
        MontyStore("candidate_sections", key="key", **kw),
        index_path=path / "candidates_index.sqlite",
        where=f"embedded {path}",
    )


def _store_from_spec(spec: dict[str, Any], source: str) -> Store:
    import maggma.stores as ms

    spec = dict(spec)
    kind = spec.pop("type", None)
    cls = getattr(ms, str(kind), None)
    if not isinstance(cls, type) or not issubclass(cls, Store):
        raise SpecError(f"{source}.type: {kind!r} is not a maggma store")
    if kind == "MongoStore":  # fail fast on an unreachable server
        kw = dict(spec.get("mongoclient_kwargs") or {})
        kw.setdefault("serverSelectionTimeoutMS", 5000)
        spec["mongoclient_kwargs"] = kw
    try:
        return cls(**spec)
    except TypeError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load_results_store(source: str | Path | None = None) -> ResultsStore:
    """The results store from a YAML file (``candidates``, ``sources`` and optionally
    ``sections`` maggma store specs, e.g. MongoStore; ``sections`` defaults to ``sources`` with
    ``_sections`` appended to its collection name), ``$SMOACS_RESULTS_STORE``, or the embedded
    default."""
    source = source or os.environ.get(RESULTS_STORE_ENV)
    if not source:
        return embedded_results_store()
    from smoacs_flows.io import load_yaml

    path = Path(source).expanduser()
    spec = load_yaml(path, "results-store file", SpecError)
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: expected a mapping with 'candidates' and 'sources'")
    if spec.get("type") == "embedded":
        return embedded_results_store(spec.get("path"))
    for key in ("candidates", "sources"):
        if not isinstance(spec.get(key), dict):
            raise SpecError(f"{path}: {key}: missing (a maggma store spec, e.g. MongoStore)")
    cand = _store_from_spec(spec["candidates"], f"{path}: candidates")
    src = _store_from_spec(spec["sources"], f"{path}: sources")
    sec_spec = spec.get("sections") or {
        **spec["sources"],
        "collection_name": str(spec["sources"].get("collection_name", "sources")) + "_sections",
    }
    sec = _store_from_spec(sec_spec, f"{path}: sections")
    return ResultsStore(cand, src, sec, where=str(path))


# ----------------------------------------------------------------------------- builder


def load_outputs(job_store: Any, uuids: list[str]) -> dict[str, Any]:
    """``{"job:UUID:INDEX": output}`` with blobs resolved: one query on the outputs store and
    one per additional store (jobflow's ``query(load=True)`` queries the blob store once per
    job document, and a montydb query decodes the whole store)."""
    from jobflow.utils.find import find_key, update_in_dictionary
    from pydash import get

    docs = list(
        job_store.query(
            {"uuid": {"$in": uuids}}, properties=["uuid", "index", "output"], load=False
        )
    )
    wanted: dict[str, list[tuple[int, tuple]]] = defaultdict(list)
    for i, d in enumerate(docs):
        for loc in find_key(d, "blob_uuid"):
            ref = get(d, list(loc))
            if isinstance(ref, dict) and ref.get("store"):
                wanted[ref["store"]].append((i, tuple(loc)))
    for store_name, locs in wanted.items():
        store = job_store.additional_stores[store_name]
        ids = {get(docs[i], list(loc))["blob_uuid"] for i, loc in locs}
        data = {
            o["blob_uuid"]: o["data"]
            for o in store.query(
                {"blob_uuid": {"$in": sorted(ids)}}, properties=["blob_uuid", "data"]
            )
        }
        for i, loc in locs:
            bid = get(docs[i], list(loc))["blob_uuid"]
            if bid in data:
                update_in_dictionary(docs[i], {loc: data[bid]})
    return {f"job:{d['uuid']}:{d.get('index', 1)}": d.get("output") for d in docs}


def _job_key(doc: dict[str, Any]) -> str:
    return f"job:{doc['uuid']}:{doc.get('index', 1)}"


def _campaign_key(campaign: str, version: int) -> str:
    return f"campaign:{campaign}:v{version}"


def dft_firework_states(
    lp: Any, campaign: str, version: int
) -> tuple[dict[str, dict[str, Any]], dict[str, int], str]:
    """``(failures, fw_ids, signature)`` of a campaign version's per-candidate fireworks."""
    from smoacs_flows.makers.launchpad import lp_session
    from smoacs_flows.makers.recovery import failure_reason

    tag = f"smoacs:{campaign}:v{version}"
    failures: dict[str, dict[str, Any]] = {}
    fw_ids: dict[str, int] = {}
    sig = []
    with lp_session(lp, write=False):
        fws = list(
            lp.fireworks.find(
                {"spec.tags": tag, "spec.candidate_id": {"$exists": True}},
                {"fw_id": 1, "state": 1, "name": 1, "spec.candidate_id": 1, "spec.stage": 1},
            )
        )
        for fw in sorted(fws, key=lambda f: f["fw_id"]):
            cid = fw["spec"]["candidate_id"]
            fw_ids.setdefault(cid, fw["fw_id"])
            sig.append(f"{fw['fw_id']}:{fw['state']}")
            if fw["state"] == "FIZZLED":
                failures[cid] = {
                    "stage": fw["spec"].get("stage", "dft"),
                    "fw_id": fw["fw_id"],
                    "firework": fw["name"],
                    "state": "FIZZLED",
                    "reason": failure_reason(lp, fw["fw_id"]),
                }
    return failures, fw_ids, ";".join(sig)


class CandidatesBuilder(Builder):
    """Joins a JobStore's campaign job outputs into the candidates collection, incrementally.

    An *item* is a campaign version with new or changed job outputs (or a changed LaunchPad
    signature). Only those job outputs are loaded; the sections of unchanged ones come from the
    ledger. Its documents are then re-assembled and written if any changed.
    """

    def __init__(
        self,
        job_store: Store,
        results: ResultsStore,
        launchpad: Any = None,
        campaigns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.job_store = job_store
        self.results = results
        self.launchpad = launchpad
        self.only = set(campaigns) if campaigns else None
        self.stats: dict[str, int] = defaultdict(int)
        super().__init__(
            sources=[job_store],
            targets=[results.candidates, results.sources, results.sections],
            chunk_size=1,
            **kwargs,
        )

    def connect(self) -> None:
        """Connect the JobStore and the results store."""
        self.job_store.connect()
        self.results.connect()

    def get_items(self) -> Iterator[dict[str, Any]]:
        """Campaign versions whose job outputs (or DFT fireworks) changed since the last run."""
        props = [
            "uuid",
            "index",
            "completed_at",
            "metadata.stage",
            "metadata.campaign",
            "metadata.tags",
        ]
        jobs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        q: dict[str, Any] = {
            "metadata.stage": {"$in": list(STAGE_KEYS)},
            "metadata.campaign": {"$exists": True},
        }
        for d in self.job_store.query(q, properties=props):
            md = d.get("metadata") or {}
            camp = md.get("campaign")
            if self.only and camp not in self.only:
                continue
            ver = tag_version(md.get("tags"), camp)
            if ver is None:
                continue  # not submitted through smoacs-flows (no version tag)
            jobs[(camp, ver)].append(d)
        ledger = {
            d["key"]: d
            for d in self.results.sources.query({}, properties=["key", "completed_at", "signature"])
        }
        for (camp, ver), docs in sorted(jobs.items()):
            changed = [
                d
                for d in docs
                if ledger.get(_job_key(d), {}).get("completed_at") != str(d.get("completed_at"))
            ]
            failures, fw_ids, sig = ({}, {}, "")
            if self.launchpad is not None:
                failures, fw_ids, sig = dft_firework_states(self.launchpad, camp, ver)
            if not changed and ledger.get(_campaign_key(camp, ver), {}).get("signature") == sig:
                self.stats["unchanged_campaigns"] += 1
                continue
            yield {
                "campaign": camp,
                "version": ver,
                "jobs": docs,
                "changed": changed,
                "failures": failures,
                "fw_ids": fw_ids,
                "signature": sig,
            }

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Load the changed outputs, merge every job's sections, assemble the documents."""
        changed = {_job_key(d) for d in item["changed"]}
        keys = [_job_key(d) for d in item["jobs"] if _job_key(d) not in changed]
        cached = (
            {d["key"]: d for d in self.results.sections.query({"key": {"$in": keys}})}
            if keys
            else {}
        )
        # one pass over the JobStore for every changed output (montydb scans per query)
        outputs = {}
        if changed:
            uuids = sorted({d["uuid"] for d in item["changed"]})
            outputs = load_outputs(self.job_store, uuids)
        per_job, ledger, sections = [], [], []
        for d in sorted(item["jobs"], key=lambda x: str(x.get("completed_at"))):
            k = _job_key(d)
            if k in changed:
                out = outputs.get(k)
                secs = extract_sections(d["metadata"]["stage"], out, d["uuid"])
                ledger.append(
                    {
                        "key": k,
                        "campaign": item["campaign"],
                        "version": item["version"],
                        "completed_at": str(d.get("completed_at")),
                        "stage": d["metadata"]["stage"],
                    }
                )
                # JSON text: records carry keys MongoDB refuses (dots)
                sections.append({"key": k, "sections": json.dumps(secs, default=str)})
                self.stats["job_outputs_processed"] += 1
            else:
                secs = json.loads((cached.get(k) or {}).get("sections") or "{}")
            per_job.append(secs)
        docs = assemble(
            item["campaign"],
            item["version"],
            merge_sections(per_job),
            item["failures"],
            item["fw_ids"],
        )
        ledger.append(
            {
                "key": _campaign_key(item["campaign"], item["version"]),
                "campaign": item["campaign"],
                "version": item["version"],
                "signature": item["signature"],
            }
        )
        return {
            "campaign": item["campaign"],
            "version": item["version"],
            "docs": docs,
            "ledger": ledger,
            "sections": sections,
        }

    def update_targets(self, items: list[dict[str, Any]]) -> None:
        """Write candidates, then the query index, then the sections and the ledger."""
        now = datetime.now(UTC).isoformat()
        for it in items:
            camp, ver, docs = it["campaign"], it["version"], it["docs"]
            if self.results.index is not None:
                old = self.results.index.hashes(camp, ver)
            else:
                old = {
                    d["candidate_id"]: d.get("content_hash")
                    for d in self.results.candidates.query(
                        {"campaign": camp, "version": ver},
                        properties=["candidate_id", "content_hash"],
                    )
                }
            new = {d["candidate_id"]: d["content_hash"] for d in docs}
            if new != old:
                for d in docs:
                    d["last_updated"] = now
                _bulk_replace(self.results.candidates, docs, {"campaign": camp, "version": ver})
                if self.results.index is not None:
                    self.results.index.replace(camp, ver, docs)
                self.stats["documents_written"] += len(docs)
                self.stats["documents_changed"] += sum(1 for k, h in new.items() if old.get(k) != h)
            if it["sections"]:
                _bulk_replace_ledger(self.results.sections, it["sections"])
            _bulk_replace_ledger(self.results.sources, it["ledger"])
            self.stats["campaigns_built"] += 1


def _bulk_replace_ledger(store: Store, docs: list[dict[str, Any]]) -> None:
    from maggma.stores import MontyStore

    if isinstance(store, MontyStore):
        keys = [d["key"] for d in docs]
        if _monty_exists(store):
            store._collection.delete_many({"key": {"$in": keys}})
        store._collection.insert_many([dict(d) for d in docs])
    else:
        store.update(docs)


def update_results(
    results: ResultsStore | None = None,
    job_store: Store | None = None,
    launchpad: Any = None,
    campaigns: list[str] | None = None,
) -> dict[str, int]:
    """Run the builder once (incremental); returns its counters."""
    from smoacs_flows.stores.jobstore import load_job_store

    own = results is None
    results = results or load_results_store()
    job_store = job_store or load_job_store()
    b = results.builder(job_store, launchpad, campaigns)
    try:
        b.connect()
        for item in b.get_items():
            b.update_targets([b.process_item(item)])
    finally:
        job_store.close()
        if own:
            results.close()
    return dict(b.stats)


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
    ``FIELD<=VALUE`` expressions over :data:`FIELDS`; ``polarisation_min`` applies to |P|.
    """
    flt = Filter()
    for name, op, v in (
        ("verdict", "$eq", verdict),
        ("e_above_hull", "$lte", e_hull_max),
        ("nelements", "$lte", max_elements),
        ("polarisation", "$gte", polarisation_min),
        ("moment_per_fu", "$gte", moment_min),
        ("moment_per_fu", "$lte", moment_max),
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
    results = results or load_results_store()
    results.connect()  # left open: Candidate.doc reads from it
    return results.find(flt, results.versions(campaign, version), sort, descending, limit)
