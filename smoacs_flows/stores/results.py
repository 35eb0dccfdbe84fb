"""The results store: the candidates collection, its builder's ledger, and where they live.

``ResultsStore`` holds three things:

- ``candidates`` (maggma Store, key ``candidate_id``): one document per candidate
  (:mod:`smoacs_flows.stores.candidates`); montydb under ``$SMOACS_HOME/results`` by default,
  MongoDB on clusters (indexes on every query field; template ``stores/results.yaml``).
- ``sources`` (maggma Store, key ``key``): the builder's ledger, one small document per processed
  job output (its completion time) and one per campaign version (the signature of its DFT
  fireworks' states); ``sections`` (same key) holds the sections each job output contributed,
  apart, so that checking what changed never reads them.
- for montydb only, a SQLite query index beside it (``candidates_index.sqlite``,
  :mod:`smoacs_flows.stores.index`).

The rest lives beside it: the fields (:mod:`~smoacs_flows.stores.fields`), the builder
(:mod:`~smoacs_flows.stores.builder`), the query API (:mod:`~smoacs_flows.stores.query`); the
names they export are re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from maggma.core import Store
from monty.json import MSONable
from pymatgen.core import Structure

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.stores.builder import CandidatesBuilder, load_outputs, update_results
from smoacs_flows.stores.fields import (
    FIELDS,
    OPS,
    SQL_OPS,
    STAGE_KEYS,
    STATES,
    VERDICTS,
    QueryError,
    summary_row,
)
from smoacs_flows.stores.index import QueryIndex
from smoacs_flows.stores.query import Candidate, Filter, query

__all__ = [
    "FIELDS",
    "OPS",
    "RESULTS_STORE_ENV",
    "SQL_OPS",
    "STAGE_KEYS",
    "STATES",
    "VERDICTS",
    "Candidate",
    "CandidatesBuilder",
    "Filter",
    "QueryError",
    "QueryIndex",
    "ResultsStore",
    "embedded_results_store",
    "load_outputs",
    "load_results_store",
    "query",
    "summary_row",
    "update_results",
]

#: environment variable naming a results-store YAML (default: embedded montydb)
RESULTS_STORE_ENV = "SMOACS_RESULTS_STORE"


class ResultsStore(MSONable):
    """Candidates collection + builder ledger (+ SQLite query index for montydb).

    MSONable (the three maggma stores, the index path and the description), so a builder over
    it can be written to JSON for maggma's ``mrun``.
    """

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form: the stores' own ``as_dict`` (credentials included, as in the YAML
        file they came from)."""
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "candidates": self.candidates.as_dict(),
            "sources": self.sources.as_dict(),
            "sections": self.sections.as_dict(),
            "index_path": str(self.index_path) if self.index_path else None,
            "where": self.where,
        }

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
            from maggma.stores import MontyStore

            # montydb has no indexes (queries scan; the embedded store has the SQLite index)
            if self.index_path is None and not isinstance(self.candidates, MontyStore):
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
        if self.index_path is None:
            self._unique_indexes()
        else:
            self.index = self._open_index()
        self._connected = True
        return self

    def _open_index(self) -> QueryIndex:
        """The SQLite query index, rebuilt from the candidates collection when it is empty
        while the collection is not (a 0-byte or deleted index file) or unreadable (moved
        aside): the index is a cache of the store and must never hide candidates."""
        import sqlite3

        assert self.index_path is not None
        try:
            index = QueryIndex(self.index_path)
            empty = index.conn.execute("SELECT 1 FROM candidates LIMIT 1").fetchone() is None
        except sqlite3.DatabaseError:
            # a store corrupt as a whole raises here, reported with the index left as it is
            self.candidates.query_one({})
            aside = self.index_path.with_name(self.index_path.name + ".corrupt")
            self.index_path.replace(aside)
            index, empty = QueryIndex(self.index_path), True
        if empty and self.candidates.query_one({}) is not None:
            with self.writing():
                pairs: dict[tuple[str, int], list[dict[str, Any]]] = {}
                for d in self.candidates.query({}):
                    d.pop("_id", None)
                    if "campaign" in d and "version" in d and "content_hash" in d:
                        pairs.setdefault((d["campaign"], int(d["version"])), []).append(d)
                for (camp, ver), docs in sorted(pairs.items()):
                    index.replace(camp, ver, docs)
        return index

    def _unique_indexes(self) -> None:
        """One document per (candidate_id, version) and per ledger key, enforced by the
        server: builders running at once upsert the same documents, and MongoDB makes two
        racing upserts one only under a unique index."""
        from pymongo.errors import DuplicateKeyError, OperationFailure

        wanted = (
            (self.candidates, [("candidate_id", 1), ("version", 1)]),
            (self.sources, [("key", 1)]),
            (self.sections, [("key", 1)]),
        )
        for store, keys in wanted:
            coll = getattr(store, "_collection", None)
            if coll is None or not hasattr(coll, "create_index"):
                continue  # not a MongoDB-like collection
            try:
                coll.create_index(keys, unique=True)
            except (DuplicateKeyError, OperationFailure) as exc:
                if "duplicate" not in str(exc).lower() and "E11000" not in str(exc):
                    # e.g. a non-unique index of the same keys made by hand: keep it, say so
                    import warnings

                    warnings.warn(
                        f"results store {self.where}: no unique index on "
                        f"{store.collection_name} {[k for k, _ in keys]}: {str(exc)[:160]}",
                        stacklevel=2,
                    )
                    continue
                raise SmoacsError(
                    f"results store {self.where}: collection {store.collection_name} holds "
                    f"duplicate {'/'.join(k for k, _ in keys)} documents (written by an older "
                    "version running two builders at once); delete the duplicates, or drop "
                    "the three results collections: `smoacs-flows query` rebuilds them from "
                    "the job store"
                ) from None

    def _montydb_folder(self) -> Path | None:
        from maggma.stores import MontyStore

        if isinstance(self.candidates, MontyStore):
            return Path(self.candidates.database_path)
        return None

    def reading(self) -> Any:
        """Context: a consistent read of the montydb collections (shared with other readers;
        waits out a builder replacing a campaign). A no-op on MongoDB."""
        import contextlib

        from smoacs_flows.stores.locking import folder_lock

        folder = self._montydb_folder()
        return folder_lock(folder, shared=True) if folder else contextlib.nullcontext()

    def writing(self) -> Any:
        """Context: the one writer of the montydb collections (builders running at once take
        turns). A no-op on MongoDB, where unique indexes keep upserts single."""
        import contextlib

        from smoacs_flows.stores.locking import folder_lock

        folder = self._montydb_folder()
        return folder_lock(folder, shared=False) if folder else contextlib.nullcontext()

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
    def get(self, candidate_id: str, version: int | None = None) -> dict[str, Any]:
        """The full document of one candidate (of one campaign version; default the latest:
        versions of a campaign share candidate ids)."""
        q: dict[str, Any] = {"candidate_id": candidate_id}
        if version is not None:
            q["version"] = int(version)
        with self.reading():
            doc = next(iter(self.candidates.query(q, sort={"version": -1}, limit=1)), None)
        if doc is None:
            raise QueryError(f"unknown candidate {candidate_id!r}")
        doc.pop("_id", None)
        return doc

    def campaigns(self) -> dict[str, int]:
        """``{campaign: latest version}`` of the candidates stored."""
        if self.index is not None:
            return self.index.campaigns()
        out: dict[str, int] = {}
        with self.reading():
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
        # filter, sort and limit pushed down to the store, in the index's order: values
        # (ascending or descending), ties by candidate_id, then missing values by candidate_id
        with self.reading():
            if sort is None:
                docs = list(self.candidates.query(q, limit=limit or 0))
            else:
                path = FIELDS[sort][0]
                order = {path: -1 if descending else 1, "candidate_id": 1}
                have = {"$and": [q, {path: {"$ne": None}}]}
                docs = list(self.candidates.query(have, sort=order, limit=limit or 0))
                if not limit or len(docs) < limit:
                    rest = (limit - len(docs)) if limit else 0
                    none = {"$and": [q, {path: None}]}
                    docs += self.candidates.query(none, sort={"candidate_id": 1}, limit=rest)
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
        """The incremental builder from a JobStore (and a LaunchPad, for failures: a LaunchPad,
        a ``my_launchpad.yaml`` path, or ``{"embedded": PATH}``)."""
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
    from smoacs_flows.stores.jobstore import _expand

    spec = _expand(spec)  # $VARS, ${SMOACS_HOME} and ~ in values
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
