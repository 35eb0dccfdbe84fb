"""Concurrent connects to one montydb folder (two campaigns' workers on the embedded JobStore).

maggma's ``MontyStore.connect`` rewrote montydb's ``.monty.storage`` on every connect; a process
opening the folder meanwhile read an empty engine name and failed with ``ValueError: Empty
module name`` (a proposal firework fizzled with it in the concurrency chaos test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import smoacs_flows  # noqa: F401 - as in every smoacs process: montydb's set_storage made atomic
from tests.makers._campaign import ROOT

#: a worker-like process: imports smoacs_flows (as every worker does), then connects a
#: MontyStore on the folder over and over until the stop file appears
WRITER = """
import pathlib, sys, time
import smoacs_flows  # noqa: F401
from maggma.stores import MontyStore
path, ready, stop = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
store = MontyStore("outputs", database_path=path, database_name="smoacs", key="uuid")
store.connect()
ready.touch()
end = time.monotonic() + 300  # a hard end, should the test process be gone
while not stop.exists() and time.monotonic() < end:
    store.connect(force_reset=True)
    store.count()
"""


@pytest.mark.timeout(300)  # fail, not hang, should montydb block on a torn folder
def test_concurrent_montystore_connects_never_tear_the_storage_files(tmp_path: Path) -> None:
    from montydb import MontyClient

    db = tmp_path / "jobstore"
    stop = tmp_path / "STOP"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(tmp_path / f"ready{i}"), str(stop)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors: dict[str, int] = {}
    reads = 0
    try:
        t0 = time.monotonic()
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
            assert time.monotonic() - t0 < 120, "writers did not start"
            time.sleep(0.05)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                client = MontyClient(str(db))
                client["smoacs"]["outputs"].count_documents({})
                reads += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported below
                key = f"{type(exc).__name__}: {exc}"
                errors[key] = errors.get(key, 0) + 1
    finally:
        stop.touch()
        outs = [p.communicate(timeout=60)[1] for p in procs]
    assert not errors, errors
    assert reads > 0
    for p, err in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    # the files hold montydb's settings in full (sqlite engine, pymongo's BSON)
    assert (db / ".monty.storage").read_text() == "sqlite"
    cfg = (db / "monty.storage.cfg").read_text()
    assert "[sqlite]" in cfg and "use_bson = yes" in cfg


def test_unchanged_storage_files_are_left_alone(tmp_path: Path) -> None:
    from maggma.stores import MontyStore

    store = MontyStore("outputs", database_path=str(tmp_path), database_name="d", key="k")
    store.connect()
    files = sorted(f for f in tmp_path.iterdir() if f.is_file())
    assert [f.name for f in files] == [".monty.storage", "monty.storage.cfg"]
    before = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    time.sleep(0.05)
    store.connect(force_reset=True)
    after = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    assert after == before
    # no temporary folder left behind (montydb takes every folder for a database)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []


#: a worker-like process that, once the start file appears, writes one document into each of
#: many collections that do not exist yet and reads each back (first writes race on creation)
CREATOR = """
import pathlib, sys, time
import smoacs_flows  # noqa: F401
from montydb import MontyClient
path, start, tag, n = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
db = MontyClient(path)["smoacs"]
while not start.exists():
    time.sleep(0.001)
for i in range(n):
    db[f"c{i}"].insert_one({"who": tag})
    assert db[f"c{i}"].count_documents({}) >= 1
"""


@pytest.mark.timeout(300)
def test_concurrent_first_writes_to_new_collections(tmp_path: Path) -> None:
    """Four processes create the same 40 collections at once by writing to them: every write
    lands (montydb's own creation leaves a window where the file exists without its table:
    "no such table: documents" / "table ... already exists")."""
    from montydb import MontyClient, set_storage

    db = tmp_path / "jobstore"
    set_storage(str(db), storage="sqlite", use_bson=True)
    start = tmp_path / "START"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR, str(db), str(start), f"p{k}", "40"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    time.sleep(3)  # let them import and wait at the start line
    start.touch()
    outs = [p.communicate(timeout=240)[1] for p in procs]
    for p, err in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    client = MontyClient(str(db))
    for i in range(40):
        assert client["smoacs"][f"c{i}"].count_documents({}) == 4
    # no temporary collection file left beside the database folder
    assert sorted(f.name for f in db.iterdir() if f.is_file()) == [
        ".monty.storage",
        "monty.storage.cfg",
    ]


def test_collection_file_appears_only_with_its_table(tmp_path: Path, monkeypatch) -> None:
    """While the table is being created, the collection file is not there yet; a second
    creation keeps the first one's documents."""
    import sqlite3

    from montydb import MontyClient, set_storage
    from montydb.storage import sqlite as monty_sqlite

    db = tmp_path / "jobstore"
    set_storage(str(db), storage="sqlite", use_bson=True)
    target = db / "smoacs" / "outputs.collection"
    seen = []
    real = monty_sqlite.SQLiteKVEngine.create_table

    def spy(self, db_file):
        seen.append(target.exists())
        real(self, db_file)

    monkeypatch.setattr(monty_sqlite.SQLiteKVEngine, "create_table", spy)
    col = MontyClient(str(db))["smoacs"]["outputs"]
    col.insert_one({"a": 1})
    assert seen == [False]
    tables = sqlite3.connect(target).execute("select name from sqlite_master").fetchall()
    assert ("documents",) in tables
    # as a racing process would: montydb's storage-level database object creates it again
    storage = col.database.client._storage
    monty_sqlite.SQLiteDatabase(storage, col.database).collection_create("outputs")
    assert col.count_documents({}) == 1
