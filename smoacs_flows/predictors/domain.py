"""Is a structure inside a model's domain? What ``predict`` warns about before answering (a
perovskite-only model asked about rock-salt MgO would otherwise print 0.0000 eV silently)."""

from __future__ import annotations

from typing import Any

from pymatgen.core import Structure

#: the shipped perov_5 cards' scope, as their ``intended_use`` opens
_PEROV5 = "Cubic ABX3 perovskites in 5-atom cells"


def domain_problems(card: dict[str, Any], structure: Structure) -> list[str]:
    """Why ``structure`` lies outside the model described by ``card`` (empty: inside).

    Checks what a card states: its training elements (``elements_z``) and, for the perov_5
    models, the cubic 5-atom ABX3 cell they were trained on."""
    out = []
    train_z = {int(z) for z in card.get("elements_z") or []}
    if train_z:
        outside = sorted(
            {el.symbol for el in structure.composition.elements if el.Z not in train_z}
        )
        if outside:
            out.append(f"{', '.join(outside)} not among its training elements")
    if str(card.get("intended_use", "")).startswith(_PEROV5):
        if len(structure) != 5:
            out.append(f"{len(structure)} sites, not a 5-atom ABX3 cell")
        else:
            abc, angles = structure.lattice.abc, structure.lattice.angles
            if max(abs(a - 90.0) for a in angles) > 5 or max(abc) > 1.1 * min(abc):
                out.append("not a (near-)cubic cell")
            amounts = sorted(structure.composition.values())
            if structure.composition.num_atoms == 5 and amounts[-1] < 2:
                out.append(f"{structure.composition.reduced_formula} is not of the ABX3 form")
    return out
