"""CHGNet's energy above its fitted elemental references (AtomRef), against CHGNet's own
``predict_structure``."""

from __future__ import annotations

import copy

import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.predictors.base import SoftCrystalBatch
from smoacs_flows.predictors.chgnet import build


def test_energy_above_atomref_matches_chgnet_without_its_composition_model() -> None:
    pred = build()
    structures = [
        Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]
        ),
    ]
    out = pred.predict(SoftCrystalBatch.from_structures(structures))
    # CHGNet adds its AtomRef (composition model) to the graph energy; the same model with the
    # composition model removed predicts the energy above the references
    full = pred.model
    bare = copy.deepcopy(full)
    bare.composition_model = None
    for i, s in enumerate(structures):
        e = float(full.predict_structure(s, task="e")["e"])
        e_bare = float(bare.predict_structure(s, task="e")["e"])
        assert float(out["energy_per_atom"][i]) == pytest.approx(e, abs=1e-4)
        assert float(out["energy_above_atomref"][i]) == pytest.approx(e_bare, abs=1e-4)
        assert abs(e - e_bare) > 0.1  # the references are not negligible
    # rock-salt MgO binds strongly relative to its elements, bcc Fe does not
    assert float(out["energy_above_atomref"][1]) < float(out["energy_above_atomref"][0])
