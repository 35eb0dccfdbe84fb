"""Soft-element CHGNet: equality with CHGNet on discrete structures, batching, gradients."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.base import N_ELEMENTS, SoftCrystalBatch, build_predictor
from smoacs_flows.predictors.chgnet import ChgnetPredictor, build
from smoacs_flows.predictors.timing import forward_backward, leaf_batch, time_forward_backward

# CHGNet.predict_structure itself warns about a tensor->scalar conversion; not ours
pytestmark = [
    pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad"),
    pytest.mark.usefixtures("one_torch_thread"),
]

PEROV_VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "perov_5" / "val.csv"


@pytest.fixture(scope="module")
def predictor() -> ChgnetPredictor:
    """The pretrained CHGNet 0.3.0 from the wheel, float32 (loaded once per module)."""
    return build()


@pytest.fixture(scope="module")
def predictor64(predictor: ChgnetPredictor) -> ChgnetPredictor:
    """The same weights in float64, for finite differences."""
    return build(model=copy.deepcopy(predictor.model), dtype="float64")


def _fe_bcc() -> Structure:
    return Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _nacl() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _perovskites(n: int) -> list[Structure]:
    if not PEROV_VAL.exists():
        pytest.skip(f"shared perovskite data not found at {PEROV_VAL}")
    import pandas as pd

    df = pd.read_csv(PEROV_VAL, nrows=n)
    return [Structure.from_str(cif, fmt="cif") for cif in df["cif"]]


def _reference(predictor: ChgnetPredictor, structures: list[Structure]) -> list[dict]:
    ref = predictor.model.predict_structure(structures, task="em", batch_size=16)
    return [ref] if isinstance(ref, dict) else ref


def _with_grad(batch: SoftCrystalBatch) -> SoftCrystalBatch:
    return SoftCrystalBatch(
        batch.lattice.clone().requires_grad_(True),
        batch.frac_coords.clone().requires_grad_(True),
        batch.element_probs.clone().requires_grad_(True),
        batch.crystal_index,
        batch.n_sites,
    )


def test_one_hot_equals_chgnet_predict_structure(predictor: ChgnetPredictor) -> None:
    structures = [*_perovskites(4), _fe_bcc(), _nacl()]
    batch = SoftCrystalBatch.from_structures(structures)
    predictor.refresh(batch)
    out = predictor.predict(batch)
    ref = _reference(predictor, structures)
    e_ref = torch.tensor([float(r["e"]) for r in ref])
    m_ref = torch.tensor(np.concatenate([r["m"] for r in ref]), dtype=torch.float32)
    assert out["energy_per_atom"].shape == (len(structures),)
    assert out["site_magmoms"].shape == (batch.frac_coords.shape[0],)
    torch.testing.assert_close(out["energy_per_atom"], e_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["site_magmoms"], m_ref, atol=1e-4, rtol=0)
    # total moment is the per-cell sum of site moments (bcc Fe: two ~2 μB sites)
    fe = len(structures) - 2
    assert out["magmom_abs_total"][fe] == pytest.approx(float(m_ref[-10:-8].sum()), abs=1e-4)
    assert out["magmom_abs_total"][fe] > 3.0


def test_batch_of_mixed_sizes_equals_one_at_a_time(predictor: ChgnetPredictor) -> None:
    perov = _perovskites(2)
    supercell = perov[1].copy()
    supercell.make_supercell([2, 1, 1])
    structures = [perov[0], _fe_bcc(), _nacl(), supercell]
    together = predictor.predict(SoftCrystalBatch.from_structures(structures))
    for i, s in enumerate(structures):
        alone = predictor.predict(SoftCrystalBatch.from_structures([s]))
        assert together["energy_per_atom"][i] == pytest.approx(
            float(alone["energy_per_atom"][0]), abs=1e-5
        )
        assert together["magmom_abs_total"][i] == pytest.approx(
            float(alone["magmom_abs_total"][0]), abs=1e-4
        )
    # the 2x1x1 supercell is the same crystal: same energy per atom
    assert together["energy_per_atom"][3] == pytest.approx(
        float(
            predictor.predict(SoftCrystalBatch.from_structures([perov[1]]))["energy_per_atom"][0]
        ),
        abs=1e-5,
    )


def test_predict_rebuilds_graph_when_topology_changes(predictor: ChgnetPredictor) -> None:
    first = SoftCrystalBatch.from_structures([_fe_bcc()])
    predictor.refresh(first)
    second = SoftCrystalBatch.from_structures([_nacl(), _fe_bcc()])  # never refreshed
    out = predictor.predict(second)
    ref = _reference(predictor, [_nacl(), _fe_bcc()])
    torch.testing.assert_close(
        out["energy_per_atom"], torch.tensor([float(r["e"]) for r in ref]), atol=1e-4, rtol=0
    )


def test_isolated_atoms_are_finite_and_match_chgnet(predictor: ChgnetPredictor) -> None:
    lone = Structure(Lattice.cubic(12.0), ["Fe"], [[0, 0, 0]])  # no neighbour within 6 Å
    batch = _with_grad(SoftCrystalBatch.from_structures([lone, _fe_bcc()]))
    out = predictor.predict(batch)
    out["energy_per_atom"].sum().backward()
    assert torch.isfinite(batch.lattice.grad).all()
    converter = copy.deepcopy(predictor.model.graph_converter)
    converter.set_isolated_atom_response("ignore")
    ref = predictor.model.predict_graph(converter(lone), task="e")
    assert float(out["energy_per_atom"][0]) == pytest.approx(float(ref["e"]), abs=1e-5)


def test_wrapped_coordinates_follow_the_same_neighbours(predictor: ChgnetPredictor) -> None:
    batch = SoftCrystalBatch.from_structures(_perovskites(2))
    predictor.refresh(batch)
    base = predictor.predict(batch)["energy_per_atom"]
    shifted = batch.detach()
    shifts = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]).repeat(5, 1)
    shifted.frac_coords = shifted.frac_coords + shifts  # lattice translations, no refresh
    torch.testing.assert_close(predictor.predict(shifted)["energy_per_atom"], base)


def test_skin_edges_contribute_nothing(predictor: ChgnetPredictor) -> None:
    batch = SoftCrystalBatch.from_structures([*_perovskites(2), _nacl()])
    skinned = ChgnetPredictor(predictor.model, skin=1.0)
    skinned.refresh(batch)
    predictor.refresh(batch)
    assert skinned.graph_sizes()["angles"] > predictor.graph_sizes()["angles"]
    torch.testing.assert_close(
        skinned.predict(batch)["energy_per_atom"],
        predictor.predict(batch)["energy_per_atom"],
        atol=2e-5,
        rtol=0,
    )


def test_gradients_reach_lattice_coordinates_and_distributions(
    predictor: ChgnetPredictor,
) -> None:
    batch = _with_grad(SoftCrystalBatch.from_structures([*_perovskites(2), _fe_bcc()]))
    out = predictor.predict(batch)
    (out["energy_per_atom"].sum() + out["magmom_abs_total"].sum()).backward()
    for name in ("lattice", "frac_coords", "element_probs"):
        grad = getattr(batch, name).grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    # columns CHGNet cannot embed (Z 95..98) receive no gradient
    assert batch.element_probs.grad[:, 94:].abs().sum() == 0


def _perturbed_soft_nacl() -> SoftCrystalBatch:
    # CsCl-type cell with 2.8 Å Na-Cl bonds: inside the 3 Å bond graph, so angles take part
    s = Structure(Lattice.cubic(3.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    batch = SoftCrystalBatch.from_structures([s]).detach()
    gen = torch.Generator().manual_seed(0)
    batch.lattice = (batch.lattice + 0.1 * torch.randn(1, 3, 3, generator=gen)).double()
    batch.frac_coords = (batch.frac_coords + 0.03 * torch.randn(2, 3, generator=gen)).double()
    probs = batch.element_probs.double()
    probs[0, 18] = 0.3  # site 0: 70% Na, 30% K
    probs[0, 10] = 0.7
    batch.element_probs = probs
    return batch


@pytest.mark.parametrize("name", ["lattice", "frac_coords", "element_probs"])
def test_gradient_matches_central_finite_difference(
    predictor64: ChgnetPredictor, name: str
) -> None:
    base = _perturbed_soft_nacl()
    predictor64.refresh(base)  # the graph stays fixed for every evaluation below
    assert predictor64.graph_sizes()["angles"] > 0

    def energy(b: SoftCrystalBatch) -> torch.Tensor:
        out = predictor64.predict(b)
        return out["energy_per_atom"].sum() + 0.1 * out["magmom_abs_total"].sum()

    batch = _with_grad(base)
    energy(batch).backward()
    grad = getattr(batch, name).grad
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(getattr(base, name).shape, generator=gen, dtype=torch.float64)
    if name == "element_probs":
        direction[:, 94:] = 0.0
    h = 1e-5
    plus, minus = base.detach(), base.detach()
    setattr(plus, name, getattr(base, name) + h * direction)
    setattr(minus, name, getattr(base, name) - h * direction)
    with torch.no_grad():
        fd = (energy(plus) - energy(minus)) / (2 * h)
    analytic = (grad * direction).sum()
    assert abs(float(analytic)) > 1e-4  # a real, non-trivial derivative
    assert float(analytic) == pytest.approx(float(fd), rel=1e-5, abs=1e-7)


def test_mixed_distribution_is_finite_and_differs_from_pure_elements(
    predictor: ChgnetPredictor,
) -> None:
    pure_na = SoftCrystalBatch.from_structures([_nacl()])
    pure_k = SoftCrystalBatch.from_structures([_nacl().replace_species({"Na": "K"})])
    # identical geometry: copy the Na lattice into the K cell
    pure_k.lattice = pure_na.lattice.clone()
    mixed = pure_na.detach()
    probs = mixed.element_probs.clone()
    na_sites = probs[:, 10] == 1
    probs[na_sites, 10] = 0.5
    probs[na_sites, 18] = 0.5
    mixed.element_probs = probs
    predictor.refresh(pure_na)
    e = {
        k: float(predictor.predict(b)["energy_per_atom"][0])
        for k, b in (("na", pure_na), ("k", pure_k), ("mix", mixed))
    }
    assert np.isfinite(e["mix"])
    assert abs(e["mix"] - e["na"]) > 1e-3
    assert abs(e["mix"] - e["k"]) > 1e-3


def test_probability_on_unsupported_elements_is_rejected(predictor: ChgnetPredictor) -> None:
    batch = SoftCrystalBatch.from_structures([_fe_bcc()]).detach()
    probs = batch.element_probs.clone()
    probs[1] = 0.0
    probs[1, 95] = 1.0  # Z = 96 (Cm)
    batch.element_probs = probs
    with pytest.raises(InputError, match="Z > 94"):
        predictor.refresh(batch)
    assert predictor.supported_z == frozenset(range(1, 95))
    assert probs.shape[1] == N_ELEMENTS


def test_checkpoint_path_loads_with_weights_only(
    predictor: ChgnetPredictor, tmp_path: Path
) -> None:
    path = tmp_path / "chgnet.pth"
    torch.save({"model": predictor.model.as_dict()}, path)
    loaded = build(model=str(path))
    batch = SoftCrystalBatch.from_structures([_fe_bcc()])
    torch.testing.assert_close(
        loaded.predict(batch)["energy_per_atom"], predictor.predict(batch)["energy_per_atom"]
    )
    with pytest.raises(InputError, match="neither a known version"):
        build(model=str(tmp_path / "missing.pth"))


def test_bare_forward_backward_timing(predictor: ChgnetPredictor) -> None:
    batch = SoftCrystalBatch.from_structures([_fe_bcc(), _nacl()])
    timing = time_forward_backward(predictor, batch, repeats=2, warmup=0)
    assert set(timing) == {"median_s", "min_s", "refresh_s"}
    assert 0 < timing["min_s"] <= timing["median_s"]
    leaves = leaf_batch(batch)
    loss = forward_backward(predictor, leaves)
    assert torch.isfinite(loss)
    assert leaves.lattice.grad is not None and leaves.lattice.grad.abs().sum() > 0


def test_registry_builds_chgnet() -> None:
    p = build_predictor({"type": "chgnet"})
    assert isinstance(p, ChgnetPredictor)
    assert p.needs_graph_refresh
    assert set(p.properties) == {
        "energy_per_atom",
        "site_magmoms",
        "magmom_abs_total",
        "energy_above_atomref",
    }
