"""Imports named by user files, allow-listed before anything is imported.

A campaign's ``stages.dft.vasp.*_maker.class`` and the ``@module`` keys of a monty-serialised
JSON (reference entries, maker keyword arguments) name Python modules; importing one runs its
top-level code (``class: this.Nope`` printed the Zen of Python). Only the packages a workflow
legitimately needs are allowed, checked on the name, before the import.
"""

from __future__ import annotations

import importlib
from typing import Any

from smoacs_flows.errors import SmoacsError, SpecError

#: packages whose classes a campaign or a reference file may name (and their sub-modules)
ALLOWED_PACKAGES = (
    "atomate2",
    "pymatgen",
    "smoacs_flows",
    "jobflow",
    "custodian",
    "emmet",
    "monty",
    "numpy",  # monty's own encoding of arrays
    "datetime",  # monty's own encoding of dates
)


def module_allowed(module: str) -> bool:
    """Whether ``module`` is one of :data:`ALLOWED_PACKAGES` or lies inside one."""
    return any(module == p or module.startswith(p + ".") for p in ALLOWED_PACKAGES)


def check_module(module: str, where: str, error: type[SmoacsError] = SpecError) -> None:
    """Refuse a module outside :data:`ALLOWED_PACKAGES` (``where`` names the field)."""
    if not module_allowed(module):
        raise error(
            f"{where}: module {module!r} is not allowed; only classes from "
            f"{', '.join(ALLOWED_PACKAGES[:-2])} may be named"
        )


def import_attr(path: str, where: str, error: type[SmoacsError] = SpecError) -> Any:
    """``module.Name`` (or ``module:Name``), imported only when the module is allowed."""
    module, _, name = path.replace(":", ".").rpartition(".")
    if not module or not name:
        raise error(f"{where}: {path!r} is not module.Class")
    check_module(module, where, error)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise error(f"{where}: cannot import {path!r} ({exc})") from None


def check_mson(obj: Any, where: str, error: type[SmoacsError] = SpecError, _depth: int = 0) -> None:
    """Refuse any ``@module`` outside :data:`ALLOWED_PACKAGES` anywhere in ``obj`` (a decoded
    JSON/YAML value), before monty's decoder imports it."""
    if _depth > 200:
        raise error(f"{where}: nested too deeply")
    if isinstance(obj, dict):
        mod = obj.get("@module")
        if mod is not None:
            check_module(str(mod), f"{where}.@module", error)
        for k, v in obj.items():
            check_mson(v, f"{where}.{k}", error, _depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_mson(v, f"{where}[{i}]", error, _depth + 1)


def safe_decode(obj: Any, where: str, error: type[SmoacsError] = SpecError) -> Any:
    """``MontyDecoder().process_decoded(obj)`` after :func:`check_mson`."""
    from monty.json import MontyDecoder

    check_mson(obj, where, error)
    return MontyDecoder().process_decoded(obj)
