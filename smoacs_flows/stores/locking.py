"""A cross-process readers/writer lock on an embedded (montydb) store's folder.

montydb writes one operation at a time: replacing a campaign's candidates is a delete and
an insert, so two builders running at once (``run``'s workers, ``status``, ``query``, ``mrun``)
could each delete and then each insert, leaving every candidate twice, and a reader between the
two steps sees none. Writers hold the lock exclusively for the whole replacement; readers of
the montydb collections share it. ``flock`` locks die with their process, so a killed builder
never leaves the store locked.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from smoacs_flows.errors import SmoacsError

#: seconds to wait for another process's hold before giving up with a clear error
LOCK_TIMEOUT = 600.0
#: the lock file, inside the store's folder
LOCK_NAME = ".smoacs-store.lock"

_held = threading.local()


@contextlib.contextmanager
def folder_lock(folder: str | Path, shared: bool, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``folder``'s lock, shared (readers) or exclusive (a writer), for a block.

    Nested holds in one thread reuse the outer one (a shared hold cannot become exclusive).
    Where the lock file cannot be opened (a read-only folder nobody can write to either),
    the block runs without it.
    """
    key = str(Path(folder).resolve())
    held: dict[str, list] = getattr(_held, "locks", None) or {}
    _held.locks = held
    if key in held:
        if not shared and held[key][0]:
            raise RuntimeError(f"{key}: a shared hold cannot be made exclusive")
        held[key][1] += 1
        try:
            yield
        finally:
            held[key][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: one holder at a time, readers included
        from filelock import FileLock

        with FileLock(os.path.join(key, LOCK_NAME), timeout=timeout):
            held[key] = [False, 1]
            try:
                yield
            finally:
                del held[key]
        return
    try:
        fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o664)
    except OSError:
        try:
            fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDONLY)
        except OSError:
            yield  # nothing can write here: nothing to wait for
            return
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SmoacsError(
                        f"store {key} is locked by another process for more than "
                        f"{timeout:.0f} s (a builder writing it; the lock goes with its process)"
                    ) from None
                time.sleep(0.01)
        held[key] = [shared, 1]
        try:
            yield
        finally:
            del held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock
