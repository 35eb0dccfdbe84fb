"""torch-sim relaxation path: same trajectory as our lockstep ASE FIRE, failures kept apart."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.relax import CHGNetEvaluator, relax_batched

pytest.importorskip("torch_sim")

from smoacs_flows.screening.relax_torchsim import relax_torchsim  # noqa: E402


def _nacl(a: float) -> Structure:
    conv = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return conv.get_primitive_structure()


def test_torchsim_follows_ase_fire_and_isolates_bad_input():
    """torch-sim's ASE-flavour FIRE with the Frechet cell filter makes the same first steps as
    ASE's FIRE + FrechetCellFilter (ours): energies after 3 steps agree; a structure with
    overlapping atoms is rejected with its reason and the rest still relax."""
    rattled = _nacl(5.6)
    rattled.perturb(0.05)
    good = [_nacl(5.3), _nacl(5.9), rattled]
    bad = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])
    ev = CHGNetEvaluator()
    ours = relax_batched(good, ev, fmax=1e-6, steps=3)
    ts = relax_torchsim([*good, bad], ev, fmax=1e-6, steps=3)
    assert [r.ok for r in ts] == [True, True, True, False]
    assert "overlapping" in ts[3].error
    for a, b in zip(ours, ts):
        assert abs(a.energy_per_atom - b.energy_per_atom) < 1e-4  # eV/atom
        assert abs(a.structure.volume - b.structure.volume) < 1e-3 * a.structure.volume
    # they moved: 5.3 Å is compressed, 5.9 Å stretched (CHGNet's NaCl is near 5.6-5.7 Å)
    assert ts[0].structure.volume > good[0].volume
    assert ts[1].structure.volume < good[1].volume
