"""montydb's ``set_storage`` made safe for concurrent processes.

maggma's ``MontyStore.connect`` calls ``montydb.set_storage`` on every connect, and that
truncates and rewrites ``.monty.storage`` (the storage engine's name) and ``monty.storage.cfg``
in the database folder. A process opening a ``MontyClient`` on the folder at that moment reads
an empty engine name and fails with ``ValueError: Empty module name`` (montydb imports
``"montydb.storage."``, then ``""``), or reads a cut config and silently falls back to defaults.
Two campaigns' workers connect the same embedded JobStore all the time, so a job could fizzle.

:func:`install` replaces ``set_storage`` (in montydb and in maggma, which imported it by name)
with :func:`set_storage`: the same files, written through a temporary file and an atomic
rename, and left alone when they already hold the same bytes.

The sqlite engine has a second race: a collection is a file ``<db>/<name>.collection`` that
``collection_create`` makes by opening it (an empty file appears) and then creating its table.
Another process that sees the file in between skips the creation and fails with
``sqlite3.OperationalError: no such table: documents`` (seen with two campaigns started at
once on one embedded JobStore: a job fizzled); two creating at once fail with "table already
exists", and two creating the database folder at once with ``FileExistsError``.
:func:`install` also replaces ``SQLiteStorage.database_create`` (``exist_ok``) and
``SQLiteDatabase.collection_create`` with :func:`collection_create`: the table is made in a
temporary file beside the database folder and hard-linked into place, so the collection file
never exists without its table, and a second creator just finds it there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

#: montydb's own set_storage (kept to produce the file contents)
_ORIGINAL: Any = None


def set_storage(
    repository: str | None = None,
    storage: str | None = None,
    mongo_version: str | None = None,
    use_bson: bool | None = None,
    **kwargs: Any,
) -> None:
    """``montydb.set_storage`` with atomic, skip-if-unchanged writes of its files."""
    from montydb import configure

    from smoacs_flows.io import atomic_write_bytes

    if (storage or configure.DEFAULT_STORAGE) == configure.MEMORY_STORAGE:
        _ORIGINAL(repository, storage, mongo_version, use_bson, **kwargs)
        return
    repo = Path(configure.provide_repository(repository))
    repo.mkdir(parents=True, exist_ok=True)
    # montydb writes the files (and sets its session options) in a private folder first;
    # not inside ``repo``, where every folder is taken for a database
    with tempfile.TemporaryDirectory(prefix="smoacs-monty-") as tmp:
        _ORIGINAL(tmp, storage, mongo_version, use_bson, **kwargs)
        for f in sorted(Path(tmp).iterdir()):
            data = f.read_bytes()
            target = repo / f.name
            try:
                if target.read_bytes() == data:
                    continue
            except OSError:
                pass
            atomic_write_bytes(target, data)


def database_create(self: Any, db_name: str) -> None:
    """``SQLiteStorage.database_create`` that tolerates a folder made meanwhile."""
    os.makedirs(self._db_path(db_name), exist_ok=True)


def collection_create(self: Any, col_name: str) -> None:
    """``SQLiteDatabase.collection_create``, atomic (module docstring): the collection file
    appears, by a hard link, only once its table exists; if another process made it first,
    theirs is kept."""
    os.makedirs(self._db_path, exist_ok=True)
    target = self._col_path(col_name)
    if os.path.isfile(target):
        return
    # beside the database folder: montydb takes every folder in the repository for a
    # database and every file in the database folder for a collection, but not files here
    fd, tmp = tempfile.mkstemp(prefix=".smoacs-collection-", dir=os.path.dirname(self._db_path))
    os.close(fd)
    try:
        self._conn.create_table(tmp)
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            os.link(tmp, target)
    finally:
        os.remove(tmp)


def install() -> None:
    """Use :func:`set_storage` in montydb and maggma (idempotent; no-op without montydb)."""
    global _ORIGINAL
    import sys

    try:
        import montydb
        from montydb import configure
    except ImportError:  # pragma: no cover - montydb is a dependency
        return
    if _ORIGINAL is None:
        _ORIGINAL = configure.set_storage
    from montydb.storage import sqlite as monty_sqlite

    monty_sqlite.SQLiteStorage.database_create = database_create
    monty_sqlite.SQLiteDatabase.collection_create = collection_create
    configure.set_storage = set_storage
    montydb.set_storage = set_storage
    mongolike = sys.modules.get("maggma.stores.mongolike")
    if mongolike is not None and hasattr(mongolike, "set_storage"):
        mongolike.set_storage = set_storage
