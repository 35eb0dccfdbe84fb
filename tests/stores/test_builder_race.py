"""Builders writing one results store at once (``run``'s workers, ``status``, ``query``).

montydb replaces a campaign's candidates with a delete and an insert: two builders at once each
deleted, then each inserted, and the store kept every candidate twice (``status`` counted 8 of a
4-candidate campaign in the concurrency chaos test); a reader between the two steps saw none.
On MongoDB the same upserts stay single only under a unique index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.makers._campaign import ROOT

N = 4  # candidates of the campaign

#: a builder process: writes the campaign's N candidates (new hashes each round) ROUNDS times
WRITER = """
import sys
from maggma.stores import MemoryStore
from smoacs_flows.stores.results import embedded_results_store
path, wid, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = embedded_results_store(path).connect()
b = r.builder(MemoryStore())
for k in range(rounds):
    docs = [
        {"candidate_id": f"c-{i}", "campaign": "c", "version": 1, "stage": "relaxed",
         "state": "pending", "formula": "Fe", "elements": ["Fe"], "content_hash": f"{wid}-{k}-{i}"}
        for i in range(n)
    ]
    led = [{"key": "campaign:c:1", "campaign": "c", "version": 1, "signature": f"{wid}-{k}"}]
    b.update_targets([{"campaign": "c", "version": 1, "docs": docs, "ledger": led,
                       "sections": []}])
r.close()
"""


@pytest.mark.timeout(300)
def test_builders_at_once_keep_every_candidate_once(tmp_path: Path) -> None:
    from smoacs_flows.stores.results import embedded_results_store

    path = tmp_path / "results"
    results = embedded_results_store(path).connect()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), "12", str(N)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    seen: list[int] = []
    t0 = time.monotonic()
    while any(p.poll() is None for p in procs) and time.monotonic() - t0 < 240:
        with results.reading():  # what status, get and the report do
            ids = [
                d["candidate_id"]
                for d in results.candidates.query({"campaign": "c"}, properties=["candidate_id"])
            ]
        seen.append(len(ids))
        assert len(ids) == len(set(ids)), sorted(ids)  # never a candidate twice
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    # a reader never caught a builder between its delete and its insert
    first = next((i for i, n in enumerate(seen) if n), len(seen))
    assert set(seen[first:]) <= {N}, sorted(set(seen))
    ids = [d["candidate_id"] for d in results.candidates.query({}, properties=["candidate_id"])]
    assert sorted(ids) == [f"c-{i}" for i in range(N)]
    assert len(list(results.sources.query({"key": "campaign:c:1"}))) == 1
    assert len(results.index.hashes("c", 1)) == N
    results.close()


def test_a_writer_waits_for_a_reader_in_another_process(tmp_path: Path) -> None:
    """flock semantics across processes: the exclusive hold starts only after the shared one
    ends (and a killed holder's lock goes with it)."""
    from smoacs_flows.stores.locking import folder_lock

    script = (
        "import sys, time\n"
        "from smoacs_flows.stores.locking import folder_lock\n"
        "print('asking', flush=True)\n"
        "t = time.monotonic()\n"
        "with folder_lock(sys.argv[1], shared=False):\n"
        "    print(time.monotonic() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with folder_lock(tmp_path, shared=True):
        p = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout.readline().strip() == "asking"
        time.sleep(2.0)
        assert p.poll() is None  # still waiting for us
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and float(out) >= 1.9
    # a holder killed mid-hold releases the lock with its process
    hold = "import sys, time\nfrom smoacs_flows.stores.locking import folder_lock\n"
    hold += "with folder_lock(sys.argv[1], shared=False):\n    print('in', flush=True)\n"
    hold += "    time.sleep(600)\n"
    q = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert q.stdout.readline().strip() == "in"
    q.kill()
    q.wait()
    with folder_lock(tmp_path, shared=False, timeout=10):
        pass


def test_mongodb_results_store_keeps_one_document_per_candidate_version() -> None:
    """The unique indexes on a MongoDB-like store (mongomock): a second document with the same
    (candidate_id, version) is refused by the server, not only avoided by our code."""
    from maggma.stores import MemoryStore
    from pymongo.errors import DuplicateKeyError

    from smoacs_flows.stores.results import ResultsStore

    r = ResultsStore(
        MemoryStore("candidates", key="candidate_id"),
        MemoryStore("sources", key="key"),
        MemoryStore("sections", key="key"),
    ).connect()
    coll = r.candidates._collection
    coll.insert_one({"candidate_id": "a", "version": 1})
    coll.insert_one({"candidate_id": "a", "version": 2})  # versions share ids
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"candidate_id": "a", "version": 1})
    r.sources._collection.insert_one({"key": "k"})
    with pytest.raises(DuplicateKeyError):
        r.sources._collection.insert_one({"key": "k"})


def test_mongodb_store_with_duplicates_names_the_collection() -> None:
    """A store an older version left with duplicates: a clear error, nothing dropped."""
    from maggma.stores import MemoryStore

    from smoacs_flows.errors import SmoacsError
    from smoacs_flows.stores.results import ResultsStore

    cand = MemoryStore("candidates", key="candidate_id")
    cand.connect()
    cand._collection.insert_many([{"candidate_id": "a", "version": 1} for _ in range(2)])
    r = ResultsStore(cand, MemoryStore("sources", key="key"), MemoryStore("sections", key="key"))
    with pytest.raises(SmoacsError, match="candidates holds duplicate candidate_id/version"):
        r.connect()
    assert cand._collection.count_documents({}) == 2


def _item(stage: str, jobs: dict[str, str]) -> dict:
    """A built item of campaign c v1: N candidates at ``stage``, from the job outputs ``jobs``
    ({uuid: completed_at})."""
    docs = [
        {
            "candidate_id": f"c-{i}",
            "campaign": "c",
            "version": 1,
            "stage": stage,
            "state": "pending",
            "formula": "Fe",
            "elements": ["Fe"],
            "content_hash": f"{stage}-{i}",
        }
        for i in range(N)
    ]
    keys = {f"job:{u}:1": t for u, t in jobs.items()}
    ledger = [{"key": k, "campaign": "c", "version": 1, "completed_at": t} for k, t in keys.items()]
    return {"campaign": "c", "version": 1, "docs": docs, "ledger": ledger, "sections": []} | {
        "basis": keys
    }


@pytest.mark.parametrize(
    ("older", "in_job_store", "kept"),
    [
        ({"p": "t1"}, True, "relaxed"),  # read before the relaxation finished: skipped
        ({"p": "t1", "r": "t0"}, True, "relaxed"),  # an earlier completion of it: skipped
        ({"p": "t1"}, False, "proposed"),  # that output since deleted: this one is the truth
    ],
)
def test_a_builder_that_read_older_outputs_never_takes_the_store_back(
    tmp_path: Path, older: dict, in_job_store: bool, kept: str
) -> None:
    """Two builders: one read the JobStore before the relaxation output ``r`` completed, the
    other after; the newer one writes first. The older one's write would take every candidate
    back to "proposed" (and, as the ledger already lists ``r``, keep it there)."""
    from maggma.stores import MemoryStore

    from smoacs_flows.stores.results import embedded_results_store

    jobs = MemoryStore("outputs", key="uuid")
    jobs.connect()
    jobs.update([{"uuid": "p", "index": 1}] + ([{"uuid": "r", "index": 1}] if in_job_store else []))
    with embedded_results_store(tmp_path / "results") as results:
        b = results.builder(jobs)
        b.update_targets([_item("relaxed", {"p": "t1", "r": "t2"})])
        b.update_targets([_item("proposed", older)])
        stages = {d["stage"] for d in results.candidates.query({}, properties=["stage"])}
        assert stages == {kept}
        assert {
            r["stage"]
            for r in json.loads(
                results.index.conn.execute(
                    "SELECT json_group_array(json(row)) FROM candidates"
                ).fetchone()[0]
            )
        } == {kept}
        assert b.stats["stale_items_skipped"] == (kept == "relaxed")
