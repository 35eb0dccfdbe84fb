"""MLIP relaxation: known lattice constants, per-structure failures, the two paths agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.relax import check_structure, relax_atomate2, relax_batched

A_NACL_EXP = 5.640  # Å, rock salt, room temperature
A_FE_EXP = 2.8665  # Å, bcc α-Fe


def _nacl(a: float) -> Structure:
    conv = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return conv.get_primitive_structure()


def _conventional_a(s: Structure, atoms_per_conv: int) -> float:
    return (s.volume * atoms_per_conv / len(s)) ** (1 / 3)


def test_check_structure_reasons():
    ok = _nacl(5.6)
    assert check_structure(ok) is None
    over = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])
    assert "overlapping" in check_structure(over)
    nan = Structure(Lattice([[math.nan, 0, 0], [0, 4, 0], [0, 0, 4]]), ["Na"], [[0, 0, 0]])
    assert "NaN" in check_structure(nan)
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-7]]), ["Na"], [[0, 0, 0]])
    assert "degenerate" in check_structure(flat)
    am = Structure(Lattice.cubic(3.5), ["Am"], [[0, 0, 0]])
    assert "Am" in check_structure(am) and "not supported" in check_structure(am)


def test_batched_relaxation_lattice_constants_and_failures():
    fe = Structure(Lattice.cubic(2.72), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    fe = fe.get_primitive_structure()
    overlapping = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    isolated = Structure(Lattice.cubic(15.0), ["Na"], [[0, 0, 0]])  # no neighbour for CHGNet
    batch = [_nacl(5.35), overlapping, fe, isolated]  # both start > 2 % from experiment
    res = relax_batched(batch, "chgnet", fmax=0.01, steps=200)
    nacl, bad1, fe_r, bad2 = res
    assert nacl.ok and nacl.converged and fe_r.ok and fe_r.converged
    a_nacl = _conventional_a(nacl.structure, 8)
    a_fe = _conventional_a(fe_r.structure, 2)
    assert abs(a_nacl / A_NACL_EXP - 1) < 0.02, a_nacl
    assert abs(a_fe / A_FE_EXP - 1) < 0.02, a_fe
    assert abs(5.35 / A_NACL_EXP - 1) > 0.02 and abs(2.72 / A_FE_EXP - 1) > 0.02
    assert nacl.energy_per_atom < 0 and np.isfinite(fe_r.energy_per_atom)
    assert not bad1.ok and "overlapping" in bad1.error
    assert not bad2.ok and "isolated" in bad2.error  # failed inside the MLIP, batch went on
    assert nacl.steps > 0 and nacl.wall_time > 0


@pytest.mark.slow
def test_atomate2_path_agrees_with_batched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Structure(
        Lattice([[-1.41, 1.41, 1.41], [1.41, -1.41, 1.41], [1.41, 1.41, -1.41]]),
        ["Fe"],
        [[0, 0, 0]],
    )
    a = relax_atomate2([s], "chgnet", fmax=0.01, steps=100)[0]
    assert list(tmp_path.iterdir()) == []  # atomate2's files stayed in a temporary folder
    b = relax_batched([s], "chgnet", fmax=0.01, steps=100)[0]
    assert a.ok and b.ok and a.converged and b.converged
    assert abs(a.energy_per_atom - b.energy_per_atom) < 1e-3


def test_mattersim_batch_evaluator_matches_its_calculator():
    """No MatterSim weights offline: a randomly initialised MatterSim model checks the batching
    plumbing (units, stress convention, order) against MatterSim's own ASE calculator."""
    import torch
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
    from mattersim.forcefield.potential import MatterSimCalculator, Potential
    from pymatgen.io.ase import AseAtomsAdaptor

    from smoacs_flows.screening.relax import MatterSimEvaluator

    torch.manual_seed(0)
    pot = Potential(M3Gnet(device="cpu"), device="cpu")
    structs = []
    for i in range(3):
        s = Structure(
            Lattice.cubic(3.9 + 0.1 * i),
            ["Sr", "Ti", "O", "O", "O"],
            [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
        )
        s.perturb(0.1)
        structs.append(AseAtomsAdaptor.get_atoms(s))
    batch = MatterSimEvaluator(potential=pot).evaluate(structs)
    calc = MatterSimCalculator.from_potential(pot)
    for atoms, (e, f, stress) in zip(structs, batch):
        atoms.calc = calc
        assert e == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
        assert np.allclose(f, atoms.get_forces(), atol=1e-5)
        assert np.allclose(stress, atoms.get_stress(voigt=False), atol=1e-6)
    assert len({round(b[0], 6) for b in batch}) == 3  # three different structures, in order


def test_mattersim_without_checkpoint_is_a_clear_error(monkeypatch):
    from smoacs_flows.errors import InputError
    from smoacs_flows.screening.relax import make_evaluator

    monkeypatch.delenv("SMOACS_MATTERSIM_CHECKPOINT", raising=False)
    with pytest.raises(InputError, match="SMOACS_MATTERSIM_CHECKPOINT"):
        make_evaluator("mattersim")


def _random_mattersim_checkpoint(path):
    """A small random M3GNet saved in MatterSim's checkpoint layout (no weights offline)."""
    import torch
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet

    torch.manual_seed(0)
    model = M3Gnet(num_blocks=2, units=32, device="cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model_name": "m3gnet", "model_args": model.get_model_args(), "model": model.state_dict()},
        path,
    )
    return path


def test_mattersim_checkpoint_found_in_mattersims_cache_by_name(tmp_path, monkeypatch):
    """With no SMOACS_MATTERSIM_CHECKPOINT, the released model is taken from MatterSim's own
    cache (~/.local/mattersim/pretrained_models), and relaxation runs on the device asked."""
    import torch

    import smoacs_flows.predictors.mattersim as pm
    from smoacs_flows.screening.relax import relax

    monkeypatch.delenv("SMOACS_MATTERSIM_CHECKPOINT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".local" / "mattersim" / "pretrained_models"
    _random_mattersim_checkpoint(cache / "mattersim-v1.0.0-1M.pth")
    seen = []
    load = pm.load_potential

    def spy(model, device="cpu", download=True):
        seen.append((str(model), str(device)))
        return load(model, device=device, download=download)

    monkeypatch.setattr(pm, "load_potential", spy)
    s = Structure(Lattice.cubic(2.9), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.52]])
    res = relax([s], "mattersim", fmax=0.5, steps=2, device="auto")[0]
    assert res.ok, res.error
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert seen == [(str(cache / "mattersim-v1.0.0-1M.pth"), want)]
    # a released name picks that file from the cache; an explicit device is passed through
    seen.clear()
    relax([s], "mattersim", fmax=0.5, steps=1, device="cpu", model="MatterSim-v1.0.0-1M")
    assert seen == [(str(cache / "mattersim-v1.0.0-1M.pth"), "cpu")]
    # atomate2's path finds the same file (MatterSimCalculator on the device asked)
    res = relax([s], "mattersim", method="atomate2", fmax=0.5, steps=1, device="cpu")[0]
    assert res.ok, res.error


def test_relax_device_auto_means_cuda_when_present(monkeypatch):
    """``auto`` asks for CUDA when torch sees it (here pretended), not the CPU."""
    import torch

    from smoacs_flows.errors import InputError
    from smoacs_flows.screening.relax import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device(None) == "cuda"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="not a torch device"):
        resolve_device("gpu0")


def test_check_structure_shares_the_prefilter_checks():
    """NaN and degenerate cells: the relaxation's pre-check and the prefilter give one reason,
    worded the same (one place for each check)."""
    from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one

    cfg = PrefilterConfig(max_elements=None, min_distance=None, neutrality_policy=None)
    nan_lattice = Structure(Lattice([[math.nan, 0, 0], [0, 4, 0], [0, 0, 4]]), ["Na"], [[0] * 3])
    nan_coords = Structure(Lattice.cubic(4), ["Na"], [[math.nan, 0, 0]])
    # rows (4,0,0), (0,4,0), (4,4,1e-7): volume 4*4*1e-7 = 1.6e-6 Å^3
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-7]]), ["Na"], [[0, 0, 0]])
    for s, reason in [
        (nan_lattice, "lattice has NaN/inf entries"),
        (nan_coords, "coordinates have NaN/inf entries"),
        (flat, "degenerate lattice (volume 1.6e-06 Å^3)"),
    ]:
        assert check_structure(s) == reason
        assert prefilter_one({}, s, cfg) == [reason]
