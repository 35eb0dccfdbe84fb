"""Regenerate smoacs_flows/data/elements.json: frozen oxidation-state tables and ionic radii.

The ``ionic`` policy is the SMOACS papers' table: the intersection of SMACT's oxidation states
(``smact/data/oxidation_states.txt``), pymatgen's ``icsd_oxidation_states`` and pymatgen's
``common_oxidation_states``. It is frozen as data so that proposals do not drift with library
versions. Run with the path to SMACT's oxidation_states.txt (``pip download smact``; unzip):

    python scripts/build_element_table.py path/to/oxidation_states.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pymatgen
from pymatgen.core import Element
from pymatgen.core.periodic_table import _PT_DATA

OUT = Path(__file__).resolve().parents[1] / "smoacs_flows" / "data" / "elements.json"


def read_smact(path: Path) -> dict[str, list[int]]:
    """Parse SMACT's ``symbol ox ox ...`` table."""
    table = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        sym, *ox = line.split()
        table[sym] = [int(o) for o in ox]
    return table


def _radii(shannon: dict, cn: str) -> dict[str, float]:
    """Shannon ionic radius per oxidation state at coordination ``cn`` (high spin if split)."""
    out = {}
    for ox, by_cn in shannon.items():
        spins = by_cn.get(cn)
        if not spins:
            continue
        entry = spins.get("High Spin") or spins.get("") or next(iter(spins.values()))
        out[str(int(ox))] = float(entry["ionic_radius"])
    return out


def main(smact_file: str) -> None:
    """Write the frozen element table."""
    smact = read_smact(Path(smact_file))
    elements = []
    for z in range(1, 99):
        el = Element.from_Z(z)
        ionic = sorted(
            set(smact.get(el.symbol, []))
            & set(el.icsd_oxidation_states)
            & set(el.common_oxidation_states)
        )
        shannon = _PT_DATA[el.symbol].get("Shannon radii", {})
        elements.append(
            {
                "Z": z,
                "symbol": el.symbol,
                "ionic": ionic,
                "metallic_zero": bool(el.is_metal or el.is_metalloid),
                "radii_vi": _radii(shannon, "VI"),
                "radii_xii": _radii(shannon, "XII"),
                "atomic_radius": float(el.atomic_radius) if el.atomic_radius else None,
                "rare_earth": bool(el.is_rare_earth or el.symbol in ("Sc", "Y")),
            }
        )
    doc = {
        "description": "Frozen per-element data for SMOACS (Z = 1..98).",
        "ionic_source": "SMACT oxidation_states.txt ∩ pymatgen icsd_oxidation_states ∩ "
        "pymatgen common_oxidation_states",
        "pymatgen_version": pymatgen.core.__version__,
        "radii_source": "Shannon (1976) ionic radii via pymatgen, CN VI and XII, high spin, Å",
        "elements": elements,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(elements)} elements)")


if __name__ == "__main__":
    main(sys.argv[1])
