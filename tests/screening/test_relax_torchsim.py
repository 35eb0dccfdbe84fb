"""torch-sim relaxation (the default engine) against ASE's own FIRE + FrechetCellFilter on real
structures; determinism; failures kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.relax import (
    DEFAULT_METHOD,
    BatchEvaluator,
    CHGNetEvaluator,
    relax,
    relax_batched,
)

pytest.importorskip("torch_sim")

from smoacs_flows.screening.relax_torchsim import relax_torchsim  # noqa: E402

#: |E_torch-sim − E_ASE| allowed at convergence (eV/atom): both stop below the same fmax from
#: the same start, with CHGNet in float32 called in batches (ours) or one by one (ASE)
E_TOL = 1e-3
V_TOL = 5e-3  # relative volume
REAL = ["Si", "CsCl", "Li2O", "SrTiO3"]


def _real_inputs() -> list[Structure]:
    """Real crystals shipped with pymatgen (Si, CsCl, Li2O, SrTiO3: 2-5 atoms), strained ±3 %
    and rattled off their minimum, seeded."""
    import pymatgen.util

    root = Path(pymatgen.util.__file__).parent / "structures"
    out = []
    for k, name in enumerate(REAL):
        s = Structure.from_file(root / f"{name}.json")
        s.apply_strain(0.03 if k % 2 else -0.03)
        rng = np.random.default_rng(k)
        for i, d in enumerate(rng.normal(0, 0.03, (len(s), 3))):
            s.translate_sites([i], d, frac_coords=False, to_unit_cell=False)
        out.append(s)
    return out


def test_default_engine_matches_ase_fire_frechet_on_real_structures():
    """The default path (torch-sim) and ASE's ``FIRE`` on ``FrechetCellFilter`` driven by
    CHGNet's own ``CHGNetCalculator`` (one structure at a time, no code of ours) reach the same
    energies and volumes; both converge and both moved."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    assert DEFAULT_METHOD == "torchsim"
    inputs = _real_inputs()
    fmax, steps = 0.05, 300
    ours = relax(inputs, "chgnet", fmax=fmax, steps=steps, device="cpu")
    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    for s, r in zip(inputs, ours):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        e0 = atoms.get_potential_energy() / len(atoms)
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        assert opt.run(fmax=fmax, steps=steps), s.formula  # ASE converged
        e_ase = atoms.get_potential_energy() / len(atoms)
        assert r.ok and r.converged, (s.formula, r.error)
        assert e_ase < e0 - 0.005  # the relaxation did lower the energy
        assert abs(r.energy_per_atom - e_ase) < E_TOL, (s.formula, r.energy_per_atom, e_ase)
        assert abs(r.structure.volume / atoms.get_volume() - 1) < V_TOL, s.formula
        assert 0 < r.steps <= steps


def _nacl(a: float) -> Structure:
    conv = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return conv.get_primitive_structure()


def test_torchsim_is_deterministic_and_isolates_bad_input():
    """Two runs of the same batch give identical results bit for bit (the kill/resume tests
    compare interrupted and uninterrupted campaigns); overlapping atoms are rejected before the
    MLIP, an isolated atom fails inside it, and the rest relax and follow ours step for step."""
    rattled = _nacl(5.6)
    rattled.perturb(0.05)
    good = [_nacl(5.3), rattled, _nacl(5.9)]
    overlapping = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])
    isolated = Structure(Lattice.cubic(15.0), ["Na"], [[0, 0, 0]])  # no neighbour for CHGNet
    batch = [good[0], overlapping, good[1], isolated, good[2]]
    ev = CHGNetEvaluator(device="cpu")
    runs = [relax_torchsim(batch, ev, fmax=0.05, steps=8) for _ in range(2)]
    a, b = runs
    assert [r.ok for r in a] == [True, False, True, False, True]
    assert "overlapping" in a[1].error and a[1].steps == 0
    assert "MLIP evaluation failed" in a[3].error and "isolated" in a[3].error
    for x, y in zip(a, b):
        assert (x.ok, x.converged, x.steps, x.error) == (y.ok, y.converged, y.steps, y.error)
        if x.ok:
            assert x.energy_per_atom == y.energy_per_atom
            assert np.array_equal(x.structure.lattice.matrix, y.structure.lattice.matrix)
            assert np.array_equal(x.structure.cart_coords, y.structure.cart_coords)
    # same steps as our lockstep ASE FIRE, and they moved: 5.3 Å compressed, 5.9 Å stretched
    ours = relax_batched(good, ev, fmax=0.05, steps=8)
    for o, t in zip(ours, [a[0], a[2], a[4]]):
        assert o.steps == t.steps
        assert abs(o.energy_per_atom - t.energy_per_atom) < 1e-4
    assert a[0].structure.volume > good[0].volume
    assert a[4].structure.volume < good[2].volume


class _Inflating(BatchEvaluator):
    """A constant tensile stress and no forces: every cell keeps growing."""

    name = "chgnet"

    def evaluate(self, atoms):
        return [(-1.0 * len(x), np.zeros((len(x), 3)), -np.eye(3)) for x in atoms]


def test_exploding_cell_is_a_failure_with_its_step():
    """A cell driven past 5× its volume leaves the batch as a failure (as in ours)."""
    fe = Structure(Lattice.cubic(2.9), ["Fe"], [[0, 0, 0]])
    ts, ours = (
        f([fe], _Inflating(), fmax=0.01, steps=100)[0] for f in (relax_torchsim, relax_batched)
    )
    for r in (ts, ours):
        assert not r.ok and "cell exploded" in r.error, r.error
        assert r.steps < 100
