"""An offline convex hull on one energy scale: MLIP-relaxed prototype phases of every chemical
system that reaches the stability stage.

Offline, the only shipped reference phases are the Materials Project's elemental ground
states, so a hull built from them is a formation energy against the elements: every
compound that binds at all looks "stable". Here each candidate system's competing phases
(:mod:`smoacs_flows.screening.prototypes`: elemental, binary and ternary structure types,
decorated with the system's elements) are relaxed with the same MLIP as the candidates and
join the hull, so E_hull is the candidate's MLIP energy against an MLIP hull.

Cost control, without changing any verdict: a candidate that is already more than
``e_hull_max`` above the elements-only hull can only rise when phases are added, so only the
systems of candidates that pass that first cut get prototype phases; the others keep the
elements-only distance, marked as a lower bound. Relaxed phases are cached per
(MLIP, chemical system, prototype) in the reference store, and a cache built by
``scripts/build_hull_cache.py`` ships with the package for CHGNet.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry

from smoacs_flows.screening.prototypes import LIBRARY, is_nonmetal, phases_for
from smoacs_flows.screening.references import entry_chemsys, subsystems

log = logging.getLogger(__name__)

#: bump when the prototype library or its decoration changes (cached energies then go stale)
LIBRARY_VERSION = "1"
SHIPPED_CACHE = "chgnet-prototypes.json.gz"
#: the largest subsystem given prototype phases (the library has up to ternary types)
MAX_PROTOTYPE_ELEMENTS = 3
#: prototype phases relaxed per MLIP call (bounds the memory of one batch)
CHUNK = 96


def chemsys_of(structure: Structure) -> str:
    """``"Al-As-Cr"`` for a structure."""
    return entry_chemsys(ComputedEntry(structure.composition, 0.0))


def covered_systems(chemsys: Iterable[str]) -> set[str]:
    """Every subsystem of up to three elements of the given systems (prototypes exist there)."""
    out: set[str] = set()
    for cs in chemsys:
        out.update(s for s in subsystems(cs) if len(s.split("-")) <= MAX_PROTOTYPE_ELEMENTS)
    return out


# ----------------------------------------------------------------------------- the cache


def _store_key(mlip: str, chemsys: str) -> str:
    return f"prototypes-v{LIBRARY_VERSION}:{mlip}:{chemsys}"


def shipped_cache(mlip: str) -> dict[str, dict[str, dict]]:
    """The shipped prototype energies of ``mlip`` (``{chemsys: {phase key: result}}``; empty
    when none ships for it or it was built from another library version)."""
    path = resources.files("smoacs_flows.data").joinpath("hull").joinpath(SHIPPED_CACHE)
    try:
        with resources.as_file(path) as p, gzip.open(p, "rt") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    if doc.get("mlip") != mlip or doc.get("library_version") != LIBRARY_VERSION:
        return {}
    return doc.get("systems", {})


@dataclass
class PrototypePhases:
    """Prototype phases of some systems: MP2020-processed entries and where they came from."""

    entries: list[ComputedEntry] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"relaxed": 0, "cached": 0, "shipped": 0, "failed": 0}
    )

    @property
    def n_phases(self) -> int:
        """Phases that joined the hull (relaxation succeeded)."""
        return len(self.entries)


def prototype_phases(
    systems: Iterable[str],
    mlip: str,
    relax_fn: Callable[[list[Structure]], list[Any]],
    store: Any = None,
    use_shipped: bool = True,
) -> PrototypePhases:
    """The MLIP-relaxed prototype phases of ``systems`` (each of at most three elements).

    Looked up per system in ``store`` (a :class:`~smoacs_flows.screening.references.
    ReferenceStore`), then in the shipped cache; what is still missing is relaxed in one
    ``relax_fn`` call (results with ``ok``, ``structure``, ``energy_per_atom``, ``error``) and
    written back to the store, one document per system.
    """
    from smoacs_flows.screening.stability import mlip_entry

    out = PrototypePhases(systems=sorted(set(systems)))
    shipped = shipped_cache(mlip) if use_shipped else {}
    results: dict[str, dict[str, dict]] = {}
    todo: list[tuple[str, str, Structure]] = []
    for cs in out.systems:
        phases = phases_for(cs)
        have = (store.get_raw(_store_key(mlip, cs)) if store is not None else None) or {}
        src = "cached"
        if not all(ph.key in have for ph in phases) and all(
            ph.key in shipped.get(cs, {}) for ph in phases
        ):
            have, src = shipped[cs], "shipped"
        results[cs] = {}
        for ph in phases:
            if ph.key in have:
                results[cs][ph.key] = have[ph.key]
                out.counts[src] += 1
            else:
                todo.append((cs, ph.key, ph.structure))
    if todo:
        log.info(
            "relaxing %d prototype phases of %d systems with %s", len(todo), len(results), mlip
        )
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            try:
                res = relax_fn([s for _, _, s in chunk])
            except MemoryError as exc:  # one runaway cell must not take the hull with it
                res = [None] * len(chunk)
                log.warning("prototype relaxation chunk failed: %s", exc)
            for (cs, key, _), r in zip(chunk, res):
                results[cs][key] = {
                    "ok": bool(r is not None and r.ok),
                    "energy_per_atom": None if r is None else r.energy_per_atom,
                    "structure": r.structure.as_dict() if r and r.structure else None,
                    "error": "out of memory in its relaxation chunk" if r is None else r.error,
                }
                out.counts["relaxed"] += 1
        if store is not None:
            for cs in sorted({cs for cs, _, _ in todo}):
                store.put_raw(_store_key(mlip, cs), mlip, cs, results[cs])
    for cs in out.systems:
        for key, r in sorted(results[cs].items()):
            e = r.get("energy_per_atom")
            if not r.get("ok") or e is None or not math.isfinite(e):
                out.counts["failed"] += 1
                continue
            s = Structure.from_dict(r["structure"])
            try:
                out.entries.append(mlip_entry(s, e, mlip, entry_id=f"proto:{key}:{mlip}"))
            except Exception:  # noqa: BLE001 - MP2020 refuses some; the phase is left out
                out.counts["failed"] += 1
    return out


# ----------------------------------------------------------------------------- judging


@dataclass
class Verdict:
    """One candidate's stability: ``e_above_hull`` ≥ 0 by definition; ``hull_distance`` is the
    signed distance to the reference hull (negative: below it, a new hull phase);
    ``lower_bound``: part of its system had no compound phases on the hull (it was above the
    cut against the elements already, or two of its elements are nonmetals), so the true
    distance may be larger."""

    e_above_hull: float
    hull_distance: float
    stable: bool
    lower_bound: bool
    corrected_energy_per_atom: float

    def reason(self, e_hull_max: float) -> str | None:
        """Why the candidate is unstable (None when stable), with its numbers."""
        if self.stable:
            return None
        if self.lower_bound:
            return (
                f"e_above_hull ≥ {self.e_above_hull:.3f} eV/atom > {e_hull_max:g} "
                "(above the elements alone; competing compounds can only raise it)"
            )
        return f"e_above_hull {self.e_above_hull:.3f} eV/atom > {e_hull_max:g}"


def judge(entry: ComputedEntry, hull: Any, e_hull_max: float, covered: set[str] | None) -> Verdict:
    """The stability verdict of an MP2020-processed candidate entry on ``hull``
    (:class:`~smoacs_flows.screening.stability.Hull`). ``covered``: the systems that have
    prototype phases on the hull (None: the hull is the reference set as given)."""
    d = float(hull.phase_diagram(entry_chemsys(entry)).get_e_above_hull(entry, allow_negative=True))
    # a lower bound when some subsystem (≤ 3 elements) of its system got no prototype phases,
    # or when it holds two nonmetals (their compounds are not in the library)
    needed = covered_systems([entry_chemsys(entry)])
    els = [el.symbol for el in entry.composition.elements]
    lower = covered is not None and (not needed <= covered or sum(is_nonmetal(e) for e in els) > 1)
    lower = lower and len(els) > 1
    eh = max(d, 0.0)
    return Verdict(eh, d, eh <= e_hull_max, lower, float(entry.energy_per_atom))


def systems_needing_prototypes(
    entries: Sequence[ComputedEntry], base_hull: Any, e_hull_max: float
) -> set[str]:
    """Systems (with their subsystems of ≤ 3 elements) of the candidate entries that are
    within ``e_hull_max`` of the ``base_hull``; entries it cannot judge are skipped."""
    keep = set()
    for e in entries:
        if len(e.composition.elements) < 2:
            keep.add(entry_chemsys(e))
            continue
        try:
            pd = base_hull.phase_diagram(entry_chemsys(e))
            d = float(pd.get_e_above_hull(e, allow_negative=True))
        except Exception:  # noqa: BLE001 - judged (and reported) later
            continue
        if d <= e_hull_max:
            keep.add(entry_chemsys(e))
    return covered_systems(keep)


def hull_entries(
    entries: Sequence[ComputedEntry],
    candidates: Sequence[ComputedEntry],
    mlip: str,
    e_hull_max: float,
    relax_fn: Callable[[list[Structure]], list[Any]],
    store: Any = None,
) -> tuple[list[ComputedEntry], dict[str, Any]]:
    """The hull's entries on one MLIP energy scale, and what was added.

    ``entries``: the MLIP-relaxed reference phases; those without a structure (energies kept
    from DFT, such as the shipped elemental references) are left out. Added: the elemental
    phases of every element of the ``candidates`` (MP2020-processed MLIP entries), then the
    binary and ternary prototype phases of the systems whose candidates are within
    ``e_hull_max`` of that first hull (cached per MLIP, system and prototype in ``store``).
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from smoacs_flows.screening.stability import Hull

    kept = [e for e in entries if isinstance(e, ComputedStructureEntry)]
    elements = {el.symbol for e in candidates for el in e.composition.elements}
    el_phases = prototype_phases(elements, mlip, relax_fn, store)
    base = kept + el_phases.entries
    systems = systems_needing_prototypes(candidates, Hull(base), e_hull_max) - elements
    compounds = prototype_phases(systems, mlip, relax_fn, store)
    counts = {k: el_phases.counts[k] + compounds.counts[k] for k in el_phases.counts}
    info = {
        "systems": sorted(elements | set(compounds.systems)),
        "compound_systems": compounds.systems,
        "n_phases": el_phases.n_phases + compounds.n_phases,
        "n_elemental": el_phases.n_phases,
        "counts": {**counts, "dft_without_structure_left_out": len(entries) - len(kept)},
        "library_version": LIBRARY_VERSION,
    }
    return base + compounds.entries, info


def hull_label(base_label: str | None, n_phases: int | None, n_systems: int, mlip: str) -> str:
    """How records and reports name the hull: the prototype phases (``n_phases`` None: none
    joined it) and the other reference set on the same hull, if any."""
    if n_phases is None:
        return base_label or "no reference phases"
    name = (
        f"MLIP prototype hull ({mlip}: {n_phases} phases in {n_systems} systems, "
        f"{len(LIBRARY)} structure types + AFLOW elemental structures)"
    )
    return f"{name} + {base_label}" if base_label else name


def sun_label(elements_only: bool, novelty_checked: bool) -> str:
    """The name of the funnel's last screening step for what was actually applied."""
    if elements_only:
        return "U.N., below the elements (no compound hull)"
    if not novelty_checked:
        return "S.U. (novelty unchecked)"
    return "S.U.N."
