"""``CandidatesBuilder``: the incremental maggma Builder of the candidates collection.

It processes only job outputs that are new or changed since the last run (and campaigns whose
DFT fireworks changed state on the LaunchPad), and writes the index last, then the ledger:
interrupted anywhere, a rerun finishes the work and loses nothing. It is MSONable, so maggma's
own runner takes it from a JSON file::

    from monty.serialization import dumpfn
    dumpfn(results.builder(job_store, "my_launchpad.yaml"), "builder.json")
    # then: mrun builder.json
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maggma.core import Builder, Store

from smoacs_flows.stores.candidates import assemble, extract_sections, merge_sections, tag_version
from smoacs_flows.stores.fields import STAGE_KEYS

if TYPE_CHECKING:
    from smoacs_flows.stores.results import ResultsStore


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
    # versions of a campaign share candidate ids: a document is (candidate_id, version)
    keys = [store.key, "version"]
    keep = {d[store.key] for d in docs}
    if docs:
        store.update(docs, key=keys)
    stale = [
        d[store.key] for d in store.query(scope, properties=[store.key]) if d[store.key] not in keep
    ]
    if stale:
        store.remove_docs({**scope, store.key: {"$in": stale}})


#: an output whose blobs are not (yet) in the additional store: jobflow writes the output
#: document first, so a job still writing, or one killed in between, looks like this
INCOMPLETE = object()


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
    incomplete: set[int] = set()
    for i, d in enumerate(docs):
        for loc in find_key(d, "blob_uuid"):
            ref = get(d, list(loc))
            if isinstance(ref, dict) and ref.get("store"):
                wanted[ref["store"]].append((i, tuple(loc)))
    bad: dict[int, str] = {}
    for store_name, locs in wanted.items():
        store = job_store.additional_stores.get(store_name)
        if store is None:
            for i, _ in locs:
                bad[i] = f"its blob is in an unknown store {store_name!r}"
            continue
        ids = {get(docs[i], list(loc))["blob_uuid"] for i, loc in locs}
        data, unreadable = _read_blobs(store, sorted(ids))
        for i, loc in locs:
            bid = get(docs[i], list(loc))["blob_uuid"]
            if bid in unreadable:
                bad[i] = f"blob {bid} is unreadable ({unreadable[bid]})"
            elif bid in data:
                update_in_dictionary(docs[i], {loc: data[bid]})
            else:  # a worker killed between writing the output and its blob: not done yet
                incomplete.add(i)
    return {
        f"job:{d['uuid']}:{d.get('index', 1)}": (
            BadOutput(bad[i]) if i in bad else INCOMPLETE if i in incomplete else d.get("output")
        )
        for i, d in enumerate(docs)
    }


class BadOutput:
    """A job output that cannot be read (a truncated or undecodable blob): skipped, named."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _read_blobs(store: Any, ids: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``({blob_uuid: data}, {blob_uuid: why unreadable})``: one query, or one per blob when
    the one query fails (a truncated blob must not make every other one unreadable)."""
    try:
        found = store.query({"blob_uuid": {"$in": ids}}, properties=["blob_uuid", "data"])
        return {o["blob_uuid"]: o["data"] for o in found}, {}
    except Exception:  # noqa: BLE001 - find which blob it is
        pass
    data, unreadable = {}, {}
    for bid in ids:
        try:
            o = store.query_one({"blob_uuid": bid}, properties=["blob_uuid", "data"])
        except Exception as exc:  # noqa: BLE001 - named by the caller
            unreadable[bid] = f"{type(exc).__name__}: {str(exc)[:120]}"
            continue
        if o is not None:
            data[bid] = o["data"]
    return data, unreadable


def skip_bad_output(key: str, stage: str, exc: BaseException) -> None:
    """Say on stderr that one job output is skipped, and why (the rest still answers)."""
    import sys

    _, uuid, index = key.split(":")
    print(
        f"warning: skipped the {stage} job output {uuid} (index {index}): "
        f"{type(exc).__name__}: {str(exc)[:200]}; the other outputs are used",
        file=sys.stderr,
    )


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


def launchpad_spec(lp: Any) -> str | dict[str, Any] | None:
    """A LaunchPad as JSON-able data: a path stays a path, the embedded one is
    ``{"embedded": PATH}``, a MongoDB one its FireWorks dict."""
    from fireworks import LaunchPad

    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad

    if lp is None or isinstance(lp, dict):
        return lp
    if isinstance(lp, str | Path):
        return str(lp)
    if isinstance(lp, EmbeddedLaunchPad):
        return {"embedded": str(lp.path)}
    if isinstance(lp, LaunchPad):
        return lp.to_dict()
    raise TypeError(f"launchpad: {type(lp).__name__} is not a LaunchPad, path or dict")


def resolve_launchpad(spec: Any) -> Any:
    """The LaunchPad of :func:`launchpad_spec`'s output (or a LaunchPad, returned as is)."""
    from fireworks import LaunchPad

    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, open_launchpad

    if isinstance(spec, LaunchPad):
        return spec
    if isinstance(spec, str | Path):
        return open_launchpad(spec)
    if isinstance(spec, dict) and spec.get("embedded"):
        return EmbeddedLaunchPad(spec["embedded"])
    return LaunchPad.from_dict(spec)


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
        """``launchpad``: a FireWorks LaunchPad, a ``my_launchpad.yaml`` path, a LaunchPad dict
        (``{"embedded": PATH}`` for the embedded one) or None (no DFT failures recorded)."""
        self.job_store = job_store
        self.results = results
        self.launchpad = launchpad
        self.campaigns = sorted(campaigns) if campaigns else None
        self.only = set(campaigns) if campaigns else None
        self.stats: dict[str, int] = defaultdict(int)
        self._lp: Any = None
        self._connected = False
        super().__init__(
            sources=[job_store],
            targets=[results.candidates, results.sources, results.sections],
            chunk_size=1,
            **kwargs,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for ``mrun``: the JobStore, the results store and the LaunchPad as a
        path or a dict (a MongoDB LaunchPad's dict holds what its ``my_launchpad.yaml`` holds,
        credentials included: keep such a file private, or pass the YAML path instead)."""
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "job_store": self.job_store.as_dict(),
            "results": self.results.as_dict(),
            "launchpad": launchpad_spec(self.launchpad),
            "campaigns": self.campaigns,
        }

    def connect(self) -> None:
        """Connect the JobStore and the results store; open the LaunchPad."""
        self.job_store.connect()
        self.results.connect()
        if self._lp is None and self.launchpad is not None:
            self._lp = resolve_launchpad(self.launchpad)
        self._connected = True

    def finalize(self) -> None:
        """Close the stores and the query index (``mrun`` calls this at the end)."""
        self.job_store.close()
        self.results.close()
        self._connected = False

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
        with self.results.reading():
            ledger = {
                d["key"]: d
                for d in self.results.sources.query(
                    {}, properties=["key", "completed_at", "signature"]
                )
            }
        for (camp, ver), docs in sorted(jobs.items()):
            changed = [
                d
                for d in docs
                if ledger.get(_job_key(d), {}).get("completed_at") != str(d.get("completed_at"))
            ]
            failures, fw_ids, sig = ({}, {}, "")
            if self._lp is not None:
                failures, fw_ids, sig = dft_firework_states(self._lp, camp, ver)
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
        if not self._connected:  # a copy in one of ``mrun -n N``'s worker processes
            self.connect()
        changed = {_job_key(d) for d in item["changed"]}
        keys = [_job_key(d) for d in item["jobs"] if _job_key(d) not in changed]
        cached = {}
        if keys:  # read while no builder is between deleting and inserting them
            with self.results.reading():
                cached = {d["key"]: d for d in self.results.sections.query({"key": {"$in": keys}})}
        # one pass over the JobStore for every changed output (montydb scans per query)
        outputs = {}
        if changed:
            uuids = sorted({d["uuid"] for d in item["changed"]})
            outputs = load_outputs(self.job_store, uuids)
        per_job, ledger, sections = [], [], []
        basis: dict[str, str] = {}  # the job outputs (and their times) these documents use
        for d in sorted(item["jobs"], key=lambda x: str(x.get("completed_at"))):
            k = _job_key(d)
            if k in changed:
                out = outputs.get(k)
                if out is INCOMPLETE:  # not in the ledger: read again next time
                    per_job.append({})
                    continue
                try:
                    if isinstance(out, BadOutput):
                        raise ValueError(out.reason)
                    secs = extract_sections(d["metadata"]["stage"], out, d["uuid"])
                except Exception as exc:  # noqa: BLE001 - one bad record never hides the rest
                    # skipped and named; not in the ledger, so read (and named) again next time
                    skip_bad_output(k, d["metadata"]["stage"], exc)
                    self.stats["bad_job_outputs_skipped"] += 1
                    per_job.append({})
                    continue
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
            basis[k] = str(d.get("completed_at"))
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
            "basis": basis,
        }

    def update_targets(self, items: list[dict[str, Any]]) -> None:
        """Write candidates, then the query index, then the sections and the ledger."""
        now = datetime.now(UTC).isoformat()
        for it in items:
            with self.results.writing():  # builders running at once take turns
                self._write(it, now)

    def _write(self, it: dict[str, Any], now: str) -> None:
        """Write one item: candidates (when any changed), the query index, then the sections
        and the ledger (the ledger last: a builder killed before it redoes the item)."""
        camp, ver, docs = it["campaign"], it["version"], it["docs"]
        if self._stale(it):
            self.stats["stale_items_skipped"] += 1
            return
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

    def _stale(self, it: dict[str, Any]) -> bool:
        """Whether another builder already wrote this campaign from newer job outputs: the
        ledger holds a job output this item did not use (one that completed, or finished
        writing, after this builder read the JobStore) or a later completion of one it did.
        Writing it would take the campaign back; what it has that the ledger lacks is not in
        the ledger, so the next build reads it again."""
        basis = it.get("basis")
        if basis is None:  # an item from an older builder
            return False
        known = {
            d["key"]: str(d.get("completed_at"))
            for d in self.results.sources.query(
                {"campaign": it["campaign"], "version": it["version"]},
                properties=["key", "completed_at"],
            )
            if str(d.get("key", "")).startswith("job:")
        }
        newer = [k for k, t in known.items() if k in basis and t > basis[k]]
        unseen = [k for k in known if k not in basis]
        if unseen:  # only outputs still in the JobStore count (one deleted since does not)
            uuids = sorted({k.split(":")[1] for k in unseen})
            found = self.job_store.query({"uuid": {"$in": uuids}}, properties=["uuid", "index"])
            now = {_job_key(d) for d in found}
            unseen = [k for k in unseen if k in now]
        return bool(newer or unseen)


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
    from smoacs_flows.stores.results import load_results_store

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
