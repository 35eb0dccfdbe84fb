"""Small I/O helpers shared by every stage: atomic output directories and JSON lines."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smoacs_flows.errors import InputError, SmoacsError


@contextmanager
def atomic_output_dir(
    out: str | Path, force: bool = False, protect: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    Nothing is written to ``out`` when the block raises. An existing non-empty ``out`` is an
    error unless ``force`` is set, in which case it is replaced as a whole at the end; an
    ``out`` that is not a folder, or whose replacement would delete the SMOACS home or a path
    in ``protect`` (the command's inputs), is refused first (see :func:`check_output_dir`).
    """
    out = Path(out)
    check_output_dir(out, force=force, protect=protect)
    if out.exists() and any(out.iterdir()) and not force:
        raise SmoacsError(f"output directory {out} exists and is not empty (use --force)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def check_output_file(path: str | Path, user: bool = False) -> None:
    """Refuse an output file that exists and is not a regular file (a device, a folder, a
    FIFO): replacing it would destroy it (``mknod x c 1 3`` as root) or fail half-way. With
    ``user`` (a command's ``--out``), also an existing file inside the SMOACS home (the
    LaunchPad, job store or results files)."""
    path = Path(path)
    if user and path.exists():
        from smoacs_flows.config import smoacs_home_path

        if _inside(path, smoacs_home_path()):
            raise SmoacsError(
                f"{path} is inside the SMOACS home {smoacs_home_path()} (LaunchPad, job store,"
                " results): refusing to replace it; give another --out"
            )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SmoacsError(f"{path}: cannot use as output: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SmoacsError(f"{path} is a folder: give a file name for --out")
    if not stat.S_ISREG(st.st_mode):
        raise SmoacsError(
            f"{path} is not a regular file (a device or a pipe): refusing to replace it"
        )


def check_output_dir(out: str | Path, force: bool, protect: Iterable[str | Path] = ()) -> None:
    """Refuse an output folder that would destroy something when replaced: an existing path
    that is not a folder, and (with ``force``) a folder that is, or holds, the SMOACS home
    (LaunchPad, job store, results) or one of ``protect`` (the command's own inputs)."""
    from smoacs_flows.config import smoacs_home_path

    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        kind = "a symbolic link" if out.is_symlink() else "not a folder"
        raise SmoacsError(f"{out} is {kind}: refusing to replace it; give a new folder for --out")
    if not force or not out.exists():
        return
    home = smoacs_home_path()
    if _inside(home, out):
        raise SmoacsError(
            f"--force would delete {out}, which holds the SMOACS home {home} (LaunchPad, job "
            "store, results); give another folder for --out"
        )
    for p in protect:
        if p and _inside(Path(p), out):
            raise SmoacsError(
                f"--force would delete {out}, which holds the input {p}; give another folder"
                " for --out"
            )


@contextmanager
def warnings_only_on_success() -> Iterator[None]:
    """Hold back the warnings of a parser: shown if the block succeeds, dropped if it raises
    (the one-line error then says what was wrong, without a screen of parser chatter)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:
            exc.filename = str(path)  # a write that hit a full disk names no file
        raise


def _open_text(path: Path, mode: str = "rt"):
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSON lines (gzip when the name ends in .gz), atomically."""
    text = "".join(json.dumps(r, default=_json_default) + "\n" for r in records)
    data = text.encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    atomic_write_bytes(path, data)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (optionally gzipped); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_input_file(path, "JSON-lines file")
    out = []
    with _open_text(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
    return out


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_yaml(path: str | Path, what: str, error: type[SmoacsError] = InputError) -> Any:
    """Safe-load a YAML file; a missing file or invalid YAML is one ``error`` naming the file
    (``what``: e.g. "campaign file") and, for syntax errors, the line and column."""
    import yaml

    path = check_input_file(path, what, error=error)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise error(f"{path}: cannot read {what}: {why}") from None
    try:
        return safe_yaml_load(text, str(path), error)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: invalid YAML: nested too deeply") from None


#: most nodes a YAML document may expand to once its aliases are followed (a campaign has a few
#: hundred; a 1 KB "billion laughs" of nested aliases expands to billions)
MAX_YAML_NODES = 100_000


def _expanded_nodes(data: Any, limit: int) -> int:
    """Nodes of ``data`` counted as if every alias were copied out (shared objects counted once
    per reference, memoised by identity so the count itself stays cheap); stops past ``limit``.
    Raises ValueError for a recursive alias (a list or mapping that holds itself)."""
    memo: dict[int, int] = {}
    busy: set[int] = set()

    def count(x: Any) -> int:
        if not isinstance(x, (list, dict)):
            return 1
        key = id(x)
        if key in memo:
            return memo[key]
        if key in busy:
            raise ValueError("a recursive alias (a node that holds itself)")
        busy.add(key)
        items = list(x.keys()) + list(x.values()) if isinstance(x, dict) else x
        n = 1
        for item in items:
            n += count(item)
            if n > limit:
                break
        busy.discard(key)
        memo[key] = n
        return n

    return count(data)


class _DuplicateKey(ValueError):
    """A mapping names the same key twice (YAML keeps the last one silently)."""


def _unique_key_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (line numbers named)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202 - yaml's API
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise _DuplicateKey(
                        f"key {key!r} appears twice in one mapping (lines {first} and "
                        f"{key_node.start_mark.line + 1}); YAML would keep only the last"
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def safe_yaml_load(text: str, source: str, error: type[SmoacsError] = InputError) -> Any:
    """``yaml.safe_load`` with aliases bounded: a document that expands to over
    :data:`MAX_YAML_NODES` nodes (a "billion laughs") or holds a recursive alias is one
    ``error`` naming ``source``, before anything walks, validates or echoes it."""
    import yaml

    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except _DuplicateKey as exc:
        raise error(f"{source}: invalid YAML: {exc}") from None
    try:
        n = _expanded_nodes(data, MAX_YAML_NODES)
    except ValueError as exc:
        raise error(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise error(f"{source}: invalid YAML: nested too deeply") from None
    if n > MAX_YAML_NODES:
        raise error(
            f"{source}: YAML expands to over {MAX_YAML_NODES:,} values through its aliases"
            " (&anchor/*alias); write the values out or use fewer aliases"
        )
    return data


#: longest error line the CLI prints; longer messages (an echoed huge value) are cut
MAX_ERROR_CHARS = 2000


def clip_message(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with a note of how much was dropped."""
    text = " ".join(str(text).splitlines())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


#: largest user input file read (structure, YAML, policy): 64 MiB
MAX_INPUT_BYTES = 64 * 1024 * 1024


def check_input_file(
    path: str | Path,
    what: str = "file",
    limit: int = MAX_INPUT_BYTES,
    error: type[SmoacsError] = InputError,
) -> Path:
    """Refuse an input that is not a regular file (``/dev/zero`` behind a symlink, a FIFO, a
    folder) or is larger than ``limit`` bytes: reading it would never end or fill memory."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(
            f"{path}: not a regular file (a device, a pipe or a folder): cannot read {what}"
        )
    if st.st_size > limit:
        raise error(f"{path}: {what} is {st.st_size:,} bytes, over the {limit:,}-byte limit")
    return path
