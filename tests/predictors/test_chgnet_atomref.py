"""CHGNet's energy above its fitted elemental references (AtomRef)."""

from __future__ import annotations

import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.predictors.chgnet import build


def test_energy_above_atomref_is_energy_minus_composition_reference() -> None:
    pred = build()
    structures = [
        Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]
        ),
    ]
    out = pred.predict(SoftCrystalBatch.from_structures(structures))
    weights = pred.model.composition_model.fc.weight.view(-1).detach()
    for i, s in enumerate(structures):
        ref = sum(weights[site.specie.Z - 1] for site in s) / len(s)
        expected = out["energy_per_atom"][i] - ref
        assert torch.isclose(out["energy_above_atomref"][i], expected, atol=1e-5)
    # rock-salt MgO binds strongly relative to its elements, bcc Fe does not
    assert float(out["energy_above_atomref"][1]) < float(out["energy_above_atomref"][0])
