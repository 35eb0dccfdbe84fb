"""One-line messages for disk and file faults: a full disk, a read-only or unwritable
``$SMOACS_HOME``, a corrupted embedded store. The CLI prints them as ``error: …`` (exit 2)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from smoacs_flows.config import smoacs_home

#: errors of the file system rather than of the program
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _home() -> Path:
    return Path(os.environ.get("SMOACS_HOME") or Path.home() / ".smoacs").expanduser()


def os_error_message(exc: OSError) -> str | None:
    """``FILE: reason; fix`` for a disk fault, or None for other OS errors."""
    if exc.errno not in DISK_ERRNOS:
        return None
    where = exc.filename or "a file"
    home = _home()
    under_home = str(where).startswith(str(home))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space and run the command again"
    elif exc.errno == errno.EROFS:
        fix = (
            "point SMOACS_HOME (or --out) to a writable folder"
            if under_home
            else ("write to a writable folder")
        )
        fix = f"read-only file system: {fix}"
    else:
        fix = "check the permissions" + (" of SMOACS_HOME" if under_home else "")
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    tail = " (files are replaced atomically: what was there is unchanged)"
    return f"{where}: {reason}; {fix}{tail}"


def _corrupt_sqlite(folder: Path) -> Path | None:
    """The first SQLite file under ``folder`` that does not open as a database."""
    if not folder.is_dir():
        return None
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix not in (".collection", ".sqlite") or not p.stat().st_size:
            continue
        try:
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as conn:
                rows = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError:
            return p
        if rows != [("ok",)]:  # problems are reported as rows, not raised
            return p
    return None


def database_error_message(exc: sqlite3.DatabaseError) -> str:
    """Which embedded store is corrupted, and how to recover."""
    home = _home()
    results, jobs = home / "results", home / "jobstore"
    bad = _corrupt_sqlite(results)
    if bad is not None:
        return (
            f"results store file {bad} is corrupted ({exc}); delete the folder {results}: "
            "it is rebuilt from the job store and the LaunchPad by the next query"
        )
    bad = _corrupt_sqlite(jobs)
    if bad is not None:
        return (
            f"job store file {bad} is corrupted ({exc}); restore {jobs} from a backup, or "
            "move it aside and run the campaign again with --new-version (its outputs are lost)"
        )
    return (
        f"a database under {home} is corrupted or unreadable ({exc}), and no file under "
        f"{results} or {jobs} fails SQLite's own check; if the embedded LaunchPad "
        f"({home / 'launchpad'}) was being written when it stopped, restore it from a backup; "
        "else move the results folder aside (it is rebuilt by the next query)"
    )


__all__ = ["database_error_message", "os_error_message", "smoacs_home"]
