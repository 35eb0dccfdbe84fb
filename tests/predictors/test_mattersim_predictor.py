"""Soft-element MatterSim: loading, equality with MatterSimCalculator, gradients, errors.

No MatterSim weights are reachable here, so every test runs on a randomly initialised M3GNet
checkpoint written in MatterSim's own layout ``{model_name, model_args, model}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from smoacs_flows.errors import InputError
from smoacs_flows.predictors import mattersim as ms
from smoacs_flows.predictors.base import SoftCrystalBatch, build_predictor
from smoacs_flows.predictors.mattersim import MatterSimPredictor, build

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NotATensor:
    """A pickled object a ``weights_only`` loader must refuse."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random M3GNet saved as MatterSim saves checkpoints."""
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet

    torch.manual_seed(0)
    model = M3Gnet(num_blocks=2, units=64, device="cpu")
    # non-trivial per-element energy scale and shift, so their soft averaging is exercised
    model.normalizer.scale.copy_(1 + 0.2 * torch.rand_like(model.normalizer.scale))
    model.normalizer.shift.copy_(-4 * torch.rand_like(model.normalizer.shift))
    path = tmp_path_factory.mktemp("mattersim") / "random-m3gnet.pth"
    torch.save(
        {"model_name": "m3gnet", "model_args": model.get_model_args(), "model": model.state_dict()},
        path,
    )
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> MatterSimPredictor:
    return build(model=str(checkpoint))


def _structures() -> list[Structure]:
    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    srtio3 = Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
    )
    return [fe, nacl, srtio3]


def _with_grad(batch: SoftCrystalBatch) -> SoftCrystalBatch:
    return SoftCrystalBatch(
        batch.lattice.clone().requires_grad_(True),
        batch.frac_coords.clone().requires_grad_(True),
        batch.element_probs.clone().requires_grad_(True),
        batch.crystal_index,
        batch.n_sites,
    )


def test_random_checkpoint_predicts_finite_energies_with_gradients(
    predictor: MatterSimPredictor,
) -> None:
    batch = _with_grad(SoftCrystalBatch.from_structures(_structures()))
    out = predictor.predict(batch)
    assert set(out) == {"energy_per_atom"}
    assert out["energy_per_atom"].shape == (3,)
    assert torch.isfinite(out["energy_per_atom"]).all()
    out["energy_per_atom"].sum().backward()
    for name in ("lattice", "frac_coords", "element_probs"):
        grad = getattr(batch, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


def test_one_hot_equals_mattersim_calculator(
    predictor: MatterSimPredictor, checkpoint: Path
) -> None:
    from mattersim.forcefield.potential import MatterSimCalculator

    structures = _structures()
    out = predictor.predict(SoftCrystalBatch.from_structures(structures))
    calc = MatterSimCalculator.from_checkpoint(load_path=str(checkpoint), device="cpu")
    for s, e in zip(structures, out["energy_per_atom"]):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        assert float(e) == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-5)


def test_batch_equals_one_at_a_time(predictor: MatterSimPredictor) -> None:
    structures = _structures()
    together = predictor.predict(SoftCrystalBatch.from_structures(structures))
    for i, s in enumerate(structures):
        alone = predictor.predict(SoftCrystalBatch.from_structures([s]))
        assert float(together["energy_per_atom"][i]) == pytest.approx(
            float(alone["energy_per_atom"][0]), abs=1e-5
        )


@pytest.mark.parametrize("name", ["lattice", "frac_coords", "element_probs"])
def test_gradient_matches_central_finite_difference(checkpoint: Path, name: str) -> None:
    p64 = build(model=str(checkpoint), dtype="float64")
    s = Structure(Lattice.cubic(3.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    base = SoftCrystalBatch.from_structures([s]).detach()
    gen = torch.Generator().manual_seed(0)
    base.lattice = (base.lattice + 0.1 * torch.randn(1, 3, 3, generator=gen)).double()
    base.frac_coords = (base.frac_coords + 0.03 * torch.randn(2, 3, generator=gen)).double()
    probs = base.element_probs.double()
    probs[1, 16], probs[1, 34] = 0.6, 0.4  # site 1: 60% Cl, 40% Br
    base.element_probs = probs
    p64.refresh(base)
    assert p64._graph.triples.shape[0] > 0  # three-body terms take part

    batch = _with_grad(base)
    p64.predict(batch)["energy_per_atom"].sum().backward()
    direction = torch.randn(getattr(base, name).shape, generator=gen, dtype=torch.float64)
    h = 1e-5
    plus, minus = base.detach(), base.detach()
    setattr(plus, name, getattr(base, name) + h * direction)
    setattr(minus, name, getattr(base, name) - h * direction)
    with torch.no_grad():
        fd = (
            p64.predict(plus)["energy_per_atom"].sum() - p64.predict(minus)["energy_per_atom"].sum()
        ) / (2 * h)
    analytic = (getattr(batch, name).grad * direction).sum()
    assert abs(float(analytic)) > 1e-4
    assert float(analytic) == pytest.approx(float(fd), rel=1e-5, abs=1e-7)


def test_skin_edges_contribute_nothing(checkpoint: Path, predictor: MatterSimPredictor) -> None:
    batch = SoftCrystalBatch.from_structures(_structures())
    skinned = build(model=str(checkpoint), skin=1.0)
    skinned.refresh(batch)
    predictor.refresh(batch)
    assert skinned._graph.triples.shape[0] > predictor._graph.triples.shape[0]
    torch.testing.assert_close(
        skinned.predict(batch)["energy_per_atom"],
        predictor.predict(batch)["energy_per_atom"],
        atol=2e-5,
        rtol=0,
    )


def test_mixed_distribution_differs_from_pure_elements(predictor: MatterSimPredictor) -> None:
    nacl = _structures()[1]
    pure_na = SoftCrystalBatch.from_structures([nacl])
    pure_k = SoftCrystalBatch.from_structures([nacl.copy().replace_species({"Na": "K"})])
    mixed = pure_na.detach()
    probs = mixed.element_probs.clone()
    na_sites = probs[:, 10] == 1
    probs[na_sites, 10], probs[na_sites, 18] = 0.5, 0.5
    mixed.element_probs = probs
    predictor.refresh(pure_na)
    e = [float(predictor.predict(b)["energy_per_atom"][0]) for b in (pure_na, pure_k, mixed)]
    assert all(torch.isfinite(torch.tensor(e)))
    assert abs(e[2] - e[0]) > 1e-4 and abs(e[2] - e[1]) > 1e-4


def test_missing_released_weights_name_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty MatterSim cache
    with pytest.raises(InputError, match=r"model: /path/to.*chgnet"):
        build(model="MatterSim-v1.0.0-1M", download=False)
    # an offline machine: the download cannot happen, the error says so and how to fix it
    monkeypatch.setattr(ms, "_network_reachable", lambda timeout=3.0: False)
    with pytest.raises(InputError, match=r"cannot be downloaded.*--mlip chgnet"):
        build()  # default: MatterSim-v1.0.0-1M
    assert not (tmp_path / ".local/mattersim/pretrained_models/mattersim-v1.0.0-1M.pth").exists()


def test_cached_released_weights_load_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checkpoint: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = ms.mattersim_cache_dir()
    cache.mkdir(parents=True)
    (cache / "mattersim-v1.0.0-5M.pth").write_bytes(checkpoint.read_bytes())
    p = build(model="MatterSim-v1.0.0-5M", download=False)
    out = p.predict(SoftCrystalBatch.from_structures(_structures()[:1]))
    assert torch.isfinite(out["energy_per_atom"]).all()


def test_bad_checkpoints_are_input_errors(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(InputError, match="neither a released model"):
        build(model=str(tmp_path / "nope.pth"))
    wrong_layout = tmp_path / "layout.pth"
    torch.save({"state_dict": {}}, wrong_layout)
    with pytest.raises(InputError, match="lacks"):
        build(model=str(wrong_layout))
    ckpt = torch.load(checkpoint, weights_only=True)
    truncated = {**ckpt, "model": dict(list(ckpt["model"].items())[:-3])}
    partial = tmp_path / "partial.pth"
    torch.save(truncated, partial)
    with pytest.raises(InputError, match="missing parameters"):
        build(model=str(partial))
    # a pickled arbitrary object is refused: our loader uses weights_only=True
    unsafe = tmp_path / "unsafe.pth"
    torch.save({**ckpt, "extra": NotATensor()}, unsafe)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        build(model=str(unsafe))


def test_registry_builds_mattersim(checkpoint: Path) -> None:
    p = build_predictor({"type": "mattersim", "model": str(checkpoint)})
    assert isinstance(p, MatterSimPredictor)
    assert p.needs_graph_refresh and p.supported_z == frozenset(range(1, 95))
