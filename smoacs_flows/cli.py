"""The ``smoacs-flows`` command line.

Each sub-command lives beside the stage it drives and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed arguments, returning an exit code).
Modules are listed here and imported lazily, so a broken optional stage never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys

from smoacs_flows import __version__
from smoacs_flows.errors import SmoacsError

#: sub-command modules, each with ``register(subparsers)``
COMMAND_MODULES: list[str] = [
    "smoacs_flows.smoacs.cli",
    "smoacs_flows.predictors.cli",
    "smoacs_flows.dft.cli",
    "smoacs_flows.screening.cli",
    "smoacs_flows.makers.cli",
    "smoacs_flows.makers.cluster_cli",
    "smoacs_flows.stores.cli",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="smoacs-flows",
        description="Design crystals with SMOACS and validate them with MLIP screening and DFT.",
    )
    parser.add_argument("--version", action="version", version=f"smoacs-flows {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


#: sub-commands that hand every later argument, options included, to another command line
PASSTHROUGH = ("lpad", "rlaunch", "qlaunch")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] in PASSTHROUGH and "-h" not in argv[:first]:
        # FireWorks' own command line: no parser of ours to build (it imports every stage);
        # FireWorks' tools log through their own handlers
        from smoacs_flows.makers.cluster_cli import run_passthrough

        args = argparse.Namespace(func=run_passthrough, tool=argv[first], args=argv[first + 1 :])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
    from smoacs_flows.makers.discovery import flush_announcements

    _sigterm_exits()
    try:
        rc = int(args.func(args) or 0)
    except SmoacsError as exc:
        from smoacs_flows.io import clip_message

        flush_announcements(discard=True)  # bad input: exactly one line
        print(f"error: {clip_message(str(exc))}", file=sys.stderr)  # bounded, even if echoed
        return 2
    except OSError as exc:  # a full disk, a read-only home: say which file and what to do
        from smoacs_flows.faults import os_error_message

        msg = os_error_message(exc)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # a corrupted embedded store
        from smoacs_flows.faults import database_error_message

        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    flush_announcements()
    return rc


def _sigterm_exits() -> None:
    """SIGTERM raises SystemExit(143) in the main thread, so every ``finally`` and cleanup
    runs (temporary ``.dft-*``/output folders removed, workers ended) instead of the process
    vanishing mid-write."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
