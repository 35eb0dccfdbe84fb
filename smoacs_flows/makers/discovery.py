"""Where the LaunchPad comes from, the way FireWorks finds it (``fireworks/fw_config.py``).

Order: an explicit file (``--launchpad``); else FireWorks' own configuration: the first
``FW_config.yaml`` of the working directory, ``~/.fireworks`` and ``$FW_CONFIG_FILE`` (FireWorks'
order), whose ``LAUNCHPAD_LOC`` names the file or whose ``CONFIG_FILE_DIR`` holds
``my_launchpad.yaml``; else ``my_launchpad.yaml`` in the working directory or ``~/.fireworks``
(FireWorks' search path); else the embedded LaunchPad under ``$SMOACS_HOME``. FireWorks reads
this once at import; here it is read at each call, so the answer follows the environment.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from smoacs_flows.errors import SmoacsError

#: the ``--launchpad`` help of every command that opens the LaunchPad
LAUNCHPAD_HELP = (
    "my_launchpad.yaml (default: the one FireWorks' configuration names: FW_CONFIG_FILE, "
    "./my_launchpad.yaml, ~/.fireworks; else the embedded one; `config` shows which)"
)


@dataclass(frozen=True)
class Found:
    """A configuration file (None: the embedded default) and why it was chosen."""

    path: Path | None
    why: str


def _fireworks_root() -> Path | None:
    """The folder above the installed ``fireworks`` package (FireWorks also looks there)."""
    import importlib.util

    spec = importlib.util.find_spec("fireworks")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent.parent


def fw_config_file() -> Found:
    """The ``FW_config.yaml`` FireWorks would read (``path`` None when there is none).

    FireWorks takes the first existing one of ``./FW_config.yaml``, ``~/.fireworks/FW_config.yaml``,
    ``<fireworks root>/FW_config.yaml`` and ``$FW_CONFIG_FILE``. A ``FW_CONFIG_FILE`` naming a
    missing file is an error here (FireWorks ignores it silently).
    """
    env = os.environ.get("FW_CONFIG_FILE")
    if env and not Path(env).expanduser().is_file():
        raise SmoacsError(f"FW_CONFIG_FILE={env}: no such file")
    candidates = [
        (Path.cwd() / "FW_config.yaml", "FW_config.yaml in the working directory"),
        (Path.home() / ".fireworks" / "FW_config.yaml", "~/.fireworks/FW_config.yaml"),
    ]
    root = _fireworks_root()
    if root is not None:
        candidates.append((root / "FW_config.yaml", "FW_config.yaml beside the fireworks package"))
    if env:
        candidates.append((Path(env).expanduser(), f"FW_CONFIG_FILE={env}"))
    for path, why in candidates:
        if path.is_file():
            return Found(path, why)
    return Found(None, "no FW_config.yaml")


def _read_fw_config(path: Path) -> dict:
    from smoacs_flows.io import load_yaml

    data = load_yaml(path, "FireWorks config file", SmoacsError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SmoacsError(
            f"{path}: expected a mapping of FireWorks settings (CONFIG_FILE_DIR, ...)"
        )
    return data


def find_launchpad_file(explicit: str | Path | None = None) -> Found:
    """The LaunchPad file to use and why (``path`` None: the embedded LaunchPad)."""
    if explicit:
        return Found(Path(explicit), "--launchpad")
    cfg = fw_config_file()
    config_dir: Path | None = None
    if cfg.path is not None:
        data = _read_fw_config(cfg.path)
        loc = data.get("LAUNCHPAD_LOC")
        if loc:
            path = Path(os.path.expandvars(str(loc))).expanduser()
            if not path.is_file():
                raise SmoacsError(f"{cfg.path}: LAUNCHPAD_LOC {loc}: no such file")
            return Found(path, f"LAUNCHPAD_LOC of {cfg.why}")
        if data.get("CONFIG_FILE_DIR"):
            config_dir = Path(os.path.expandvars(str(data["CONFIG_FILE_DIR"]))).expanduser()
    searched = []
    if config_dir is not None and config_dir.resolve() != Path.cwd().resolve():
        searched.append((config_dir, f"CONFIG_FILE_DIR {config_dir} of {cfg.why}"))
    searched += [
        (Path.cwd(), "my_launchpad.yaml in the working directory (FireWorks' search path)"),
        (Path.home() / ".fireworks", "~/.fireworks/my_launchpad.yaml"),
    ]
    for folder, why in searched:
        path = folder / "my_launchpad.yaml"
        if path.is_file():
            return Found(path, why)
    return Found(
        None,
        "default: no --launchpad, no FW_CONFIG_FILE / CONFIG_FILE_DIR / LAUNCHPAD_LOC, "
        "no ~/.fireworks/my_launchpad.yaml",
    )


#: configuration lines of the running command, printed when it succeeds (or on flush)
_PENDING: list[str] = []


def announce(line: str) -> None:
    """Queue one configuration line (which LaunchPad / store, and why) for stderr.

    Lines are printed by :func:`flush_announcements` — when the command succeeds, or before a
    long run starts — so that bad input still prints exactly one ``error:`` line, and
    ``--json`` output on stdout stays clean."""
    _PENDING.append(line)


def flush_announcements(discard: bool = False) -> None:
    """Print (or with ``discard``, drop) the queued configuration lines."""
    lines = list(_PENDING)
    _PENDING.clear()
    if not discard:
        for line in lines:
            print(line, file=sys.stderr, flush=True)
