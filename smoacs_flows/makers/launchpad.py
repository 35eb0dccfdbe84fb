"""FireWorks LaunchPads: the embedded one (mongomock-persistence file, inter-process lock) and
MongoDB ones from a ``my_launchpad.yaml``.

The embedded LaunchPad keeps the whole FireWorks database in one JSON file under
``$SMOACS_HOME/launchpad/``. mongomock-persistence loads such a file into memory and writes it
back later, so two processes writing at once lose each other's updates. Here every LaunchPad
call is one *session*: take an inter-process file lock, reload the file if another process
changed it, run the call, write the file back atomically (unless the call only reads), release.
Calls nested inside a call share its session; :meth:`EmbeddedLaunchPad.session` groups several
calls (check-then-add) into one. Rockets, ``rapidfire`` and ``detect_lostruns`` work unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fireworks import LaunchPad

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import SmoacsError

#: LaunchPad methods that never write (no save after them)
READ_ONLY = frozenset(
    {
        "get_launch_by_id",
        "get_fw_dict_by_id",
        "get_fw_by_id",
        "get_wf_by_fw_id",
        "get_wf_by_fw_id_lzyfw",
        "get_wf_summary_dict",
        "get_fw_ids",
        "get_wf_ids",
        "get_fw_ids_in_wfs",
        "run_exists",
        "future_run_exists",
        "get_fw_ids_from_reservation_id",
        "get_reservation_id_from_fw_id",
        "get_logdir",
        "get_tracker_data",
        "get_launchdir",
        "to_dict",
    }
)
#: seconds to wait for the embedded LaunchPad's lock before giving up with an error
LOCK_TIMEOUT = float(os.environ.get("SMOACS_LAUNCHPAD_LOCK_TIMEOUT", "600"))


def embedded_launchpad_path() -> Path:
    """The embedded LaunchPad file: ``$SMOACS_HOME/launchpad/fireworks.json``."""
    return smoacs_home() / "launchpad" / "fireworks.json"


def _session(fn: Any, write: bool) -> Any:
    @functools.wraps(fn)
    def wrapper(self: EmbeddedLaunchPad, *args: Any, **kwargs: Any) -> Any:
        with self.session(write=write):
            return fn(self, *args, **kwargs)

    return wrapper


class EmbeddedLaunchPad(LaunchPad):
    """A LaunchPad on a mongomock-persistence file, safe for concurrent processes."""

    def __init__(self, path: str | Path | None = None, strm_lvl: str = "ERROR") -> None:
        from filelock import FileLock
        from fireworks.utilities.fw_utilities import get_fw_logger

        self.path = Path(path) if path else embedded_launchpad_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SmoacsError(
                f"embedded LaunchPad {self.path}: cannot create its folder ({exc.strerror})"
            ) from None
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)
        self._local = threading.local()
        self._stamp: tuple | None = None
        self._dirty = False
        # the attributes LaunchPad.__init__ would set (no MongoDB connection here)
        self.host, self.port, self.name = f"embedded:{self.path}", None, "fireworks"
        self.username = self.password = None
        self.authsource, self.uri_mode, self.mongoclient_kwargs = "fireworks", False, {}
        self.logdir, self.strm_lvl = None, strm_lvl
        self.m_logger = get_fw_logger("launchpad", l_dir=None, stream_level=strm_lvl)
        self.m_logger.propagate = False  # FireWorks logs at DEBUG; keep the CLI's root quiet
        self.user_indices, self.wf_user_indices = [], []
        self.gridfs_fallback = None  # no 16 MB document limit in mongomock
        self.backup_launch_data, self.backup_fw_data = {}, {}
        with self.session(write=True):
            if self.fw_id_assigner.count_documents({}) == 0:
                LaunchPad.reset(self, "", require_password=False)

    # ------------------------------------------------------------------ persistence
    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        import bson.json_util
        import mongomock
        import mongomock_persistence  # noqa: F401 - patches (de)serialisation of the stores
        from mongomock.store import DatabaseStore, ServerStore

        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return  # nobody changed the file since we last read or wrote it
        try:
            data = bson.json_util.loads(self.path.read_text()) if stamp else {}
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise SmoacsError(
                f"embedded LaunchPad {self.path} is corrupted ({str(exc)[:80]}); restore it "
                f"from a backup, or move it aside to start an empty LaunchPad (the campaigns "
                "on it are then forgotten; their job outputs stay in the job store)"
            ) from None
        store = ServerStore.__new__(ServerStore)  # bypass env-var loading and finalizers
        store._filename = None
        store._databases = {k: DatabaseStore.from_dict(v) for k, v in data.items()}
        self.connection = mongomock.MongoClient(_store=store)
        self.db = self.connection[self.name]
        self.fireworks = self.db.fireworks
        self.launches = self.db.launches
        self.offline_runs = self.db.offline_runs
        self.fw_id_assigner = self.db.fw_id_assigner
        self.workflows = self.db.workflows
        self._stamp = stamp

    def _save(self) -> None:
        import bson.json_util

        from smoacs_flows.io import atomic_write_bytes

        store = self.connection._store
        data = {k: v.to_dict() for k, v in store._databases.items()}
        # json's C encoder with bson's converter for ObjectId/datetime: the same text as
        # bson.json_util.dumps (mongomock-persistence can read it), about 4x faster
        text = json.dumps(data, default=bson.json_util.default)
        atomic_write_bytes(self.path, text.encode())
        self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def session(self, write: bool = True) -> Iterator[EmbeddedLaunchPad]:
        """Hold the lock, with fresh state, for a block of calls; write back at the end."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.write = self._local.write or write
            self._local.depth += 1
            try:
                yield self
            finally:
                self._local.depth -= 1
            return
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise SmoacsError(
                f"embedded LaunchPad {self.path} is locked by another process for more than "
                f"{LOCK_TIMEOUT:.0f} s (delete {self.path}.lock only if no smoacs-flows process "
                "is running)"
            ) from None
        self._local.depth, self._local.write = 1, write
        try:
            self._load()
            yield self
            if self._local.write:
                self._save()
        finally:
            self._local.depth = 0
            self._lock.release()

    # ------------------------------------------------------------------ FireWorks API
    def to_dict(self) -> dict[str, Any]:
        """Serialised form (the file path; no credentials exist here)."""
        return {"embedded": str(self.path)}

    def __repr__(self) -> str:
        return f"EmbeddedLaunchPad({str(self.path)!r})"


# wrap every public LaunchPad method in a session
for _name, _fn in list(vars(LaunchPad).items()):
    if _name.startswith("_") or not callable(_fn) or isinstance(_fn, (classmethod, staticmethod)):
        continue
    if _name in ("to_dict",):
        continue
    setattr(EmbeddedLaunchPad, _name, _session(_fn, write=_name not in READ_ONLY))


def redact(host: str) -> str:
    """A host or MongoDB URI without credentials."""
    return re.sub(r"//[^@/]*@", "//***@", str(host))


def describe(lp: LaunchPad) -> str:
    """Where a LaunchPad lives, for messages (never credentials)."""
    if isinstance(lp, EmbeddedLaunchPad):
        return f"embedded LaunchPad {lp.path}"
    if lp.uri_mode:
        return f"LaunchPad {redact(lp.host)} (database {lp.name})"
    return f"LaunchPad {lp.host}:{lp.port} (database {lp.name})"


def open_launchpad(file: str | Path | None = None, timeout_ms: int = 5000) -> LaunchPad:
    """The LaunchPad from ``file``, else the one FireWorks' configuration names
    (:func:`~smoacs_flows.makers.discovery.find_launchpad_file`), else the embedded one.

    A MongoDB LaunchPad is pinged first: an unreachable server is a one-line error naming
    the host (after ``timeout_ms``), before anything is written.
    """
    return resolve_launchpad(file, timeout_ms)[0]


def resolve_launchpad(
    file: str | Path | None = None, timeout_ms: int = 5000
) -> tuple[LaunchPad, str]:
    """(LaunchPad, one line saying which one and why) — see :func:`open_launchpad`."""
    from smoacs_flows.makers.discovery import find_launchpad_file

    found = find_launchpad_file(file)
    if found.path is None:
        lp: LaunchPad = EmbeddedLaunchPad()
        return lp, f"LaunchPad: {describe(lp)} ({found.why})"
    lp = launchpad_from_file(found.path, timeout_ms)
    return lp, f"LaunchPad: {describe(lp)} from {found.path} ({found.why})"


def launchpad_from_file(file: str | Path, timeout_ms: int = 5000) -> LaunchPad:
    """A LaunchPad from a ``my_launchpad.yaml``: MongoDB (pinged) or ``embedded: PATH``."""
    from smoacs_flows.io import load_yaml

    path = Path(file)
    spec = load_yaml(path, "LaunchPad file", SmoacsError)
    if not isinstance(spec, dict):
        raise SmoacsError(f"{path}: expected a mapping (host, port, name, ...)")
    if spec.get("embedded"):
        return EmbeddedLaunchPad(Path(os.path.expandvars(str(spec["embedded"]))).expanduser())
    import inspect

    known = set(inspect.signature(LaunchPad.__init__).parameters) - {"self", "kwargs"}
    known |= {"ssl_ca_file"}  # older FireWorks files
    unknown = sorted(str(k) for k in spec if k not in known)
    if unknown:
        raise SmoacsError(
            f"{path}: {unknown[0]!r} is not a LaunchPad setting (known: {', '.join(sorted(known))})"
        )
    spec.setdefault("host", "localhost")
    # FireWorks logs INFO lines to stdout; they would break `--json` output
    spec.setdefault("strm_lvl", "WARNING")
    kw = dict(spec.get("mongoclient_kwargs") or {})
    kw.setdefault("serverSelectionTimeoutMS", timeout_ms)
    kw.setdefault("connectTimeoutMS", timeout_ms)
    spec["mongoclient_kwargs"] = kw
    spec.pop("ssl_ca_file", None)
    try:
        lp = LaunchPad.from_dict(spec)
    except Exception as exc:  # noqa: BLE001 - bad settings, reported with the file
        raise SmoacsError(f"{path}: not a usable LaunchPad ({type(exc).__name__}: {exc})") from None
    where = describe(lp)
    try:
        lp.connection.admin.command("ping")
    except Exception as exc:  # noqa: BLE001 - pymongo's connection errors
        msg = str(exc).split(",")[0].split("Timeout:")[0].strip()
        raise SmoacsError(
            f"cannot reach the {where} from {path}: {type(exc).__name__}: {redact(msg)[:200]}"
        ) from None
    return lp


@contextlib.contextmanager
def lp_session(lp: LaunchPad, write: bool = True) -> Iterator[LaunchPad]:
    """A locked session on an embedded LaunchPad; a no-op for MongoDB ones."""
    if isinstance(lp, EmbeddedLaunchPad):
        with lp.session(write=write):
            yield lp
    else:
        yield lp
