"""Stability: MLIP energies as MP-style entries and e_above_hull against reference phases.

An MLIP energy becomes a ``ComputedStructureEntry`` the way MP builds its own data: GGA+U with
MP's U values when the chemistry calls for them (oxides/fluorides of the U elements), GGA
otherwise, then MP2020 anion and GGA/GGA+U mixing corrections. The hull is pymatgen's
``PhaseDiagram`` of every reference entry whose elements lie within the candidate's chemical
system (all subsystems), and the distance is ``get_e_above_hull(entry, allow_negative=True)``
(negative = below the current hull).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from smoacs_flows.errors import InputError
from smoacs_flows.screening.references import entry_chemsys, normalize_chemsys, subsystems

_COMPAT = MaterialsProject2020Compatibility(check_potcar=False)


def mp_hubbards(structure: Structure) -> dict[str, float]:
    """The U values MP would use for this composition (empty dict = plain GGA)."""
    comp = structure.composition
    els = sorted(
        (el for el in comp.elements if comp[el] > 0),
        key=lambda el: el.X if not math.isnan(el.X) else float("inf"),
    )
    u = _COMPAT.u_settings.get(els[-1].symbol, {}) if els else {}
    return {el.symbol: float(u[el.symbol]) for el in els if u.get(el.symbol)}


def mlip_entry(
    structure: Structure, energy_per_atom: float, mlip: str, entry_id: str | None = None
) -> ComputedStructureEntry:
    """An MP2020-corrected entry for a structure with an (uncorrected) MLIP energy per atom."""
    hub = mp_hubbards(structure)
    params = {
        "run_type": "GGA+U" if hub else "GGA",
        "is_hubbard": bool(hub),
        "hubbards": hub,
        "software": f"mlip:{mlip}",  # no VASP POTCAR check
    }
    entry = ComputedStructureEntry(
        structure, energy_per_atom * len(structure), parameters=params, entry_id=entry_id
    )
    out = _COMPAT.process_entry(entry, on_error="raise")
    if out is None:  # pragma: no cover - on_error="raise" raises instead
        raise InputError(f"{entry_id}: rejected by MP2020 compatibility")
    return out


class Hull:
    """Phase diagrams of reference entries, built once per chemical system."""

    def __init__(self, references: Sequence[ComputedEntry]) -> None:
        self.by_sys: dict[str, list[ComputedEntry]] = defaultdict(list)
        for e in references:
            self.by_sys[entry_chemsys(e)].append(e)
        self._pd: dict[str, PhaseDiagram] = {}

    def entries(self, chemsys: str) -> list[ComputedEntry]:
        """Reference entries of a chemical system and all its subsystems."""
        return [e for cs in subsystems(chemsys) for e in self.by_sys.get(cs, [])]

    def phase_diagram(self, chemsys: str) -> PhaseDiagram:
        """The PhaseDiagram over all subsystems; an error names a missing or empty system."""
        cs = normalize_chemsys(chemsys)
        if cs not in self._pd:
            refs = self.entries(cs)
            if not refs:
                raise InputError(f"no reference entries for chemical system {cs}")
            have = {el.symbol for e in refs for el in e.composition.elements}
            missing = [
                el
                for el in cs.split("-")
                if not any(
                    e.composition.is_element and e.composition.elements[0].symbol == el
                    for e in refs
                )
            ]
            if missing:
                raise InputError(
                    f"reference set for chemical system {cs} has no elemental entry for "
                    f"{', '.join(missing)} (have {len(refs)} entries over {'-'.join(sorted(have))})"
                )
            self._pd[cs] = PhaseDiagram(refs)
        return self._pd[cs]

    def e_above_hull(self, entry: ComputedEntry) -> float:
        """eV/atom above (negative: below) the reference hull of the entry's chemical system."""
        pd = self.phase_diagram(entry_chemsys(entry))
        return float(pd.get_e_above_hull(entry, allow_negative=True))


def mlip_reference_entries(
    references: Sequence[ComputedEntry],
    mlip: str,
    relax_fn: Callable[[list[Structure]], list[Any]],
    store: Any = None,
) -> tuple[list[ComputedEntry], dict[str, int]]:
    """Reference entries with MLIP-relaxed energies, cached per (mlip, chemsys) in ``store``.

    ``relax_fn(structures)`` returns objects with ``ok``, ``energy_per_atom``, ``error``
    (see :func:`smoacs_flows.screening.relax.relax`). Entries without a structure keep their
    (MP2020-corrected) DFT energy; entries whose relaxation failed are dropped. Returns the
    entries and counts ``{"mlip", "cached", "dft_kept", "failed"}``.
    """
    by_sys: dict[str, list[ComputedEntry]] = defaultdict(list)
    for e in references:
        by_sys[entry_chemsys(e)].append(e)
    counts = {"mlip": 0, "cached": 0, "dft_kept": 0, "failed": 0}
    out: list[ComputedEntry] = []
    for cs, entries in sorted(by_sys.items()):
        with_s = [e for e in entries if isinstance(e, ComputedStructureEntry)]
        for e in entries:
            if not isinstance(e, ComputedStructureEntry):
                out.append(e)
                counts["dft_kept"] += 1
        if not with_s:
            continue
        cached = store.get_mlip(mlip, cs) if store is not None else None
        ids = [e.entry_id or f"{cs}-{i}" for i, e in enumerate(with_s)]
        if cached is None or any(i not in cached for i in ids):
            res = relax_fn([e.structure for e in with_s])
            cached = {
                i: {
                    "ok": r.ok,
                    "energy_per_atom": r.energy_per_atom,
                    "structure": r.structure.as_dict() if r.structure is not None else None,
                    "error": r.error,
                }
                for i, r in zip(ids, res)
            }
            if store is not None:
                store.put_mlip(mlip, cs, cached)
            counts["mlip"] += len(ids)
        else:
            counts["cached"] += len(ids)
        for i, e in zip(ids, with_s):
            r = cached[i]
            if not r["ok"]:
                counts["failed"] += 1
                continue
            s = Structure.from_dict(r["structure"]) if r["structure"] else e.structure
            out.append(mlip_entry(s, r["energy_per_atom"], mlip, entry_id=f"{i}:{mlip}"))
    return out, counts
