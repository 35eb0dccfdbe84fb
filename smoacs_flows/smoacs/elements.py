"""Frozen per-element data (Z = 1..98): oxidation tables, Shannon radii, symbols."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from smoacs_flows.errors import SpecError

N_ELEMENTS = 98


@lru_cache(maxsize=1)
def element_table() -> list[dict[str, Any]]:
    """The frozen element records, index i holds Z = i + 1 (see scripts/build_element_table.py)."""
    text = resources.files("smoacs_flows.data").joinpath("elements.json").read_text()
    return json.loads(text)["elements"]


@lru_cache(maxsize=1)
def symbols() -> tuple[str, ...]:
    """Element symbols, index i holds Z = i + 1."""
    return tuple(e["symbol"] for e in element_table())


@lru_cache(maxsize=1)
def _z_by_symbol() -> dict[str, int]:
    return {s: i + 1 for i, s in enumerate(symbols())}


def z_of(symbol: str, where: str = "element") -> int:
    """Atomic number of ``symbol``; a clear error names ``where`` it came from."""
    z = _z_by_symbol().get(str(symbol).strip())
    if z is None:
        raise SpecError(f"{where}: unknown element symbol {symbol!r}")
    return z


def ionic_radius(z: int, ox: int, coordination: str = "VI") -> float:
    """Shannon ionic radius of element ``z`` at oxidation ``ox``, Å, with sensible fallbacks.

    Falls back to the other coordination, then the mean radius of the element's other states,
    then its atomic radius (oxidation number 0, e.g. metallic sites).
    """
    e = element_table()[z - 1]
    primary = e["radii_xii"] if coordination == "XII" else e["radii_vi"]
    for table in (primary, e["radii_vi"], e["radii_xii"]):
        if str(ox) in table:
            return float(table[str(ox)])
    if ox != 0:
        same_sign = [v for k, v in e["radii_vi"].items() if (int(k) > 0) == (ox > 0)]
        if same_sign:
            return float(sum(same_sign) / len(same_sign))
    return float(e["atomic_radius"] or 1.5)
