"""Process-wide settings: where embedded state lives."""

from __future__ import annotations

import os
from pathlib import Path


def smoacs_home_path() -> Path:
    """Where :func:`smoacs_home` is (``$SMOACS_HOME`` or ``~/.smoacs``), without creating it."""
    return Path(os.environ.get("SMOACS_HOME") or Path.home() / ".smoacs").expanduser()


def smoacs_home() -> Path:
    """The directory for embedded stores and caches: ``$SMOACS_HOME`` or ``~/.smoacs``.

    Created on demand.
    """
    home = smoacs_home_path()
    if home.exists() and not home.is_dir():
        from smoacs_flows.errors import InputError

        raise InputError(
            f"the SMOACS home {home} is a file, not a folder; set SMOACS_HOME to a folder"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from smoacs_flows.errors import InputError

        raise InputError(f"cannot create the SMOACS home {home}: {exc.strerror or exc}") from None
    return home


def home_path(*parts: str) -> Path:
    """A path under :func:`smoacs_home` (its parent folders created): e.g. ``home_path("runs")``."""
    p = smoacs_home().joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


#: distributions whose versions a job output records (those installed)
TRACKED = (
    "smoacs-flows",
    "torch",
    "pymatgen",
    "chgnet",
    "mattersim",
    "alignn",
    "ase",
    "gpaw",
    "atomate2",
    "custodian",
    "jobflow",
    "fireworks",
    "maggma",
)


def software_versions(names: tuple[str, ...] = TRACKED) -> dict[str, str]:
    """``{distribution: version}`` of the tracked packages that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            continue
    return out
