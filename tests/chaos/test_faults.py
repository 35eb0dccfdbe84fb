"""Disk and file faults: a read-only ``SMOACS_HOME``, a full disk, a corrupted embedded
LaunchPad file and corrupted stores. Each gives one ``error:`` line naming the file and the
fix, exit 2, and damages nothing else (the home is byte-for-byte what it was).

Real faults where the machine allows (tests run as root: a read-only bind mount and a small
tmpfs); otherwise the same errors are injected (EROFS, ENOSPC) where files are written.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chaos._cli import assert_clean, call, tree
from tests.chaos._procs import soak_campaign
from tests.chaos.conftest import FIGURES

pytestmark = pytest.mark.chaos


def _faults(kind: str, how: str) -> None:
    FIGURES.setdefault("faults", []).append({"fault": kind, "how": how})


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    """Unmount; lazily if a file in it is still open (cached store clients), so no mount
    outlives the test."""
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def _injected(err: int, under: Path) -> Iterator[None]:
    """Writes (temporary files, renames, folder creation) under ``under`` fail with ``err``."""
    real_mkstemp, real_replace, real_mkdir = tempfile.mkstemp, os.replace, os.mkdir
    real_open = open

    def bad(path) -> bool:
        return str(path).startswith(str(under))

    def mkstemp(*a, dir=None, **kw):  # noqa: A002 - tempfile's own name
        if dir is not None and bad(dir):
            raise OSError(err, os.strerror(err), str(dir))
        return real_mkstemp(*a, dir=dir, **kw)

    def replace(src, dst, *a, **kw):
        if bad(dst):
            raise OSError(err, os.strerror(err), str(dst))
        return real_replace(src, dst, *a, **kw)

    def mkdir(path, *a, **kw):
        if bad(path):
            raise OSError(err, os.strerror(err), str(path))
        return real_mkdir(path, *a, **kw)

    def open_(path, mode="r", *a, **kw):
        if bad(path) and any(c in mode for c in "wax+"):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, mode, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(tempfile, "mkstemp", mkstemp)
    mp.setattr(os, "replace", replace)
    mp.setattr(os, "mkdir", mkdir)
    mp.setattr("builtins.open", open_)
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture
def done_home(concurrent_runs, tmp_path):
    """A copy of the concurrency test's home: two finished campaigns, stores filled."""
    home = tmp_path / "home"
    shutil.copytree(concurrent_runs["home"], home)
    return home


def _cheap(d: Path) -> Path:
    """A proposal campaign without predictors (seconds to run)."""
    import yaml

    from tests.chaos.test_fuzz import PEROV

    (d / "cheap.yaml").write_text(yaml.safe_dump(PEROV))
    return d / "cheap.yaml"


def _expect_error(argv: list[str], *needles: str) -> str:
    o = call(argv)
    assert_clean(o, allow=(2,))
    line = o.error_lines()[0]
    for n in needles:
        assert n in line, (n, line)
    return line


def test_read_only_home(done_home, tmp_path, monkeypatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    camp = soak_campaign(tmp_path / "new.yaml", "newcamp")
    cheap = _cheap(tmp_path)
    before = tree(done_home)
    bound = _mount("--bind", str(done_home), str(ro))
    mounted = bound and _mount("-o", "remount,ro,bind", str(ro))
    home = ro if mounted else done_home
    monkeypatch.setenv("SMOACS_HOME", str(home))
    _faults("read-only SMOACS_HOME", "read-only bind mount" if mounted else "injected EROFS")
    try:
        with _injected(errno.EROFS, home) if not mounted else _nothing():
            line = _expect_error(["submit", str(camp)], "read-only", "SMOACS_HOME")
            assert str(home) in line
            out = home / "p"
            argv = ["propose", str(cheap), "--out", str(out), "--n", "1", "--steps", "1"]
            line = _expect_error([*argv, "--quiet"], "read-only")
            assert not out.exists()
            # a query without update writes no result, but it takes the LaunchPad's lock file
            # (opened for writing): on a read-only file system that is the one clear error
            o = call(["query", "--campaign", "soak", "--no-update", "--format", "json"])
            assert_clean(o, allow=(2,) if mounted else (0, 2))
            if o.code == 2:
                assert "read-only" in o.error_lines()[0].lower()
    finally:
        if bound:
            _umount(ro)
    assert str(ro) not in Path("/proc/mounts").read_text()  # no mount outlives the test
    assert tree(done_home) == before  # nothing damaged


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_full_disk(done_home, tmp_path, monkeypatch) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    blocks = sum(-(-p.stat().st_size // 4096) + 1 for p in done_home.rglob("*"))
    mounted = _mount("-t", "tmpfs", "-o", f"size={blocks * 4 + 4096}k", "tmpfs", str(disk))
    _faults("full disk", "tmpfs filled to the last byte" if mounted else "injected ENOSPC")
    camp = soak_campaign(tmp_path / "new.yaml", "newcamp")
    cheap = _cheap(tmp_path)
    try:
        home = disk / "home"
        shutil.copytree(done_home, home)
        before = tree(home)
        monkeypatch.setenv("SMOACS_HOME", str(home))
        if mounted:  # fill what is left, to the last byte
            with open(disk / "filler", "wb", buffering=0) as fh:
                for chunk in (65536, 4096, 1):
                    try:
                        while True:
                            fh.write(b"\0" * chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
        with _injected(errno.ENOSPC, disk) if not mounted else _nothing():
            line = _expect_error(
                ["submit", str(camp), "--new-version"], "no space left", "fireworks.json"
            )
            out = disk / "out"
            line = _expect_error(
                ["propose", str(cheap), "--out", str(out), "--n", "1", "--steps", "1", "--quiet"],
                "no space left",
            )
            assert not out.exists() and not list(disk.glob(".out.*"))
        assert tree(home) == before  # the LaunchPad and the stores are untouched
        # space again: the same submit now works, on the intact LaunchPad
        (disk / "filler").unlink(missing_ok=True)
        o = call(["submit", str(camp)])
        assert o.code == 0, o.err
        assert line
    finally:
        if mounted:
            _umount(disk)


def test_corrupted_launchpad(done_home, monkeypatch) -> None:
    monkeypatch.setenv("SMOACS_HOME", str(done_home))
    lp = done_home / "launchpad" / "fireworks.json"
    lp.write_bytes(lp.read_bytes()[: lp.stat().st_size // 2])
    before = tree(done_home)
    _faults("corrupted embedded LaunchPad file", "file truncated to half")
    for argv in (["status", "soak"], ["query", "--campaign", "soak"], ["resume", "soak"]):
        line = _expect_error(argv, str(lp), "corrupt")
        assert "backup" in line or "move it aside" in line, line
    assert tree(done_home) == before  # not overwritten with an empty LaunchPad


@pytest.mark.parametrize("store", ["results", "jobstore"])
def test_corrupted_store(done_home, store, monkeypatch) -> None:
    monkeypatch.setenv("SMOACS_HOME", str(done_home))
    files = sorted(p for p in (done_home / store).rglob("*") if p.is_file() and p.stat().st_size)
    victims = [p for p in files if p.suffix in (".sqlite", ".collection", "")] or files
    for p in victims:
        p.write_bytes(b"this is not a database " * 10)
    before = tree(done_home)
    _faults(f"corrupted {store} store", f"{len(victims)} files overwritten with text")
    line = _expect_error(["query", "--campaign", "soak"], "corrupt", str(done_home / store))
    if store == "results":
        assert "rebuilt" in line  # the fix: the results store is rebuilt from the job store
    after = tree(done_home)  # every file there was is unchanged (SQLite may add -shm/-wal)
    assert {k: after.get(k) for k in before} == before
