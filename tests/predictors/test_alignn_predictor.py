"""The soft ALIGNN predictor: equivalence with alignn's own graph path, gradients, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.predictors.alignn import AlignnModel, AlignnPredictor
from smoacs_flows.predictors.base import SoftCrystalBatch, build_predictor

TINY = {
    "name": "alignn_atomwise_pure",
    "alignn_layers": 1,
    "gcn_layers": 1,
    "atom_input_features": 92,
    "edge_input_features": 16,
    "triplet_input_features": 8,
    "embedding_features": 16,
    "hidden_features": 16,
    "output_features": 1,
    "calculate_gradient": False,
    "gradwise_weight": 0.0,
    "use_zbl": False,
}


def tiny_model(seed: int = 0, max_neighbors: int | None = None, **cfg) -> AlignnModel:
    """A randomly initialised small ALIGNN (weights are random but fixed by the seed)."""
    torch.manual_seed(seed)
    config = {
        "neighbor_strategy": "pure_torch",
        "cutoff": 5.0,
        "three_body_cutoff": 3.5,
        "max_neighbors": max_neighbors,
        "atom_features": "cgcnn",
        "model": {**TINY, **cfg},
    }
    model = AlignnModel(config).eval()
    with torch.no_grad():  # make the output depend visibly on the inputs
        model.net.fc.bias.fill_(0.3)
    return model


def structures() -> list[Structure]:
    """Three crystals of different sizes and shapes, perturbed to avoid distance ties."""
    rng = np.random.default_rng(1)
    sto = Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    sup = sto.copy()
    sup.make_supercell([2, 1, 1])
    tri = Structure(
        Lattice.from_parameters(4.1, 4.4, 5.2, 84, 97, 103),
        ["Ba", "Zr", "S", "Se", "N", "Na", "Cl"],
        rng.random((7, 3)),
    )
    out = []
    for s in (sto, sup, tri):
        frac = s.frac_coords + rng.normal(0, 0.02, (len(s), 3))
        out.append(Structure(s.lattice, s.species, frac))
    return out


def _jarvis_atoms(s: Structure):
    """``s`` as jarvis-tools' Atoms (what alignn's graph builders take)."""
    from jarvis.core.atoms import Atoms

    return Atoms(
        lattice_mat=s.lattice.matrix,
        coords=s.frac_coords,
        elements=[site.specie.symbol for site in s],
        cartesian=False,
    )


def alignn_reference(model: AlignnModel, structs: list[Structure]) -> torch.Tensor:
    """The same network evaluated through alignn's own pure-torch graph builder and forward."""
    from alignn.torch_graph_builder import batch_torch_graph_pairs, build_pure_torch_graph

    pairs = []
    for s in structs:
        atoms = _jarvis_atoms(s)
        pairs.append(
            build_pure_torch_graph(
                atoms=atoms,
                two_body_cutoff=model.cutoff,
                three_body_cutoff=model.three_body_cutoff,
                max_neighbors=model.max_neighbors,
                atom_features="cgcnn",
                use_matscipy_topology=False,
            )
        )
    g, lg = batch_torch_graph_pairs(pairs)
    with torch.no_grad():
        return model.net([g, lg, None])["out"]


@pytest.mark.parametrize("max_neighbors", [None, 8])
def test_one_hot_equals_alignn_graph_builder(max_neighbors: int | None) -> None:
    model = tiny_model(max_neighbors=max_neighbors)
    structs = structures()
    pred = AlignnPredictor(model, "band_gap", "eV")
    batch = SoftCrystalBatch.from_structures(structs)
    with torch.no_grad():
        ours = pred.predict(batch)["band_gap"]
    ref = alignn_reference(model, structs)
    assert ours.shape == (3,)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours, ref)
    # and the outputs are not trivially constant
    assert ours.std() > 1e-3


def test_attention_variant_matches_too() -> None:
    model = tiny_model(conv_type="n_alignn")
    structs = structures()[:2]
    batch = SoftCrystalBatch.from_structures(structs)
    with torch.no_grad():
        ours = model(batch, model.graph(batch))
    assert torch.allclose(ours, alignn_reference(model, structs), atol=1e-5, rtol=0)


def test_batching_is_independent_of_neighbours_in_the_batch() -> None:
    model = tiny_model()
    structs = structures()
    pred = AlignnPredictor(model, "band_gap", "eV")
    with torch.no_grad():
        together = pred.predict(SoftCrystalBatch.from_structures(structs))["band_gap"]
        alone = torch.cat(
            [pred.predict(SoftCrystalBatch.from_structures([s]))["band_gap"] for s in structs]
        )
    assert torch.allclose(together, alone, atol=1e-6)


def test_gradients_match_finite_differences() -> None:
    """Directional derivatives along random directions in lattice, coordinates and probs."""
    model = tiny_model().double()
    model.element_table = model.element_table.double()
    s = structures()[0]
    base = SoftCrystalBatch.from_structures([s])
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(5, 98, dtype=torch.float64, generator=gen), dim=1)
    x0 = [base.lattice.double(), base.frac_coords.double(), probs]
    graph = model.graph(base)
    graph.shift = graph.shift.double()

    def f(lattice, frac_coords, element_probs):
        b = SoftCrystalBatch(lattice, frac_coords, element_probs, base.crystal_index, base.n_sites)
        return model(b, graph).sum()

    inputs = [x.clone().requires_grad_() for x in x0]
    grads = torch.autograd.grad(f(*inputs), inputs)
    eps = 1e-5
    for k, (x, g) in enumerate(zip(x0, grads)):
        assert torch.isfinite(g).all() and g.abs().max() > 0
        for _ in range(3):
            v = torch.randn(x.shape, dtype=torch.float64, generator=gen)
            plus = [y + eps * v if j == k else y for j, y in enumerate(x0)]
            minus = [y - eps * v if j == k else y for j, y in enumerate(x0)]
            with torch.no_grad():
                fd = (f(*plus) - f(*minus)) / (2 * eps)
            assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-5, abs=1e-8)


def test_refresh_rebuilds_the_graph() -> None:
    model = tiny_model()
    pred = AlignnPredictor(model, "band_gap", "eV")
    assert pred.needs_graph_refresh
    s = structures()[0]
    batch = SoftCrystalBatch.from_structures([s])
    pred.refresh(batch)
    n_edges = pred._graph.src.numel()
    stretched = SoftCrystalBatch(
        batch.lattice * 1.3,
        batch.frac_coords,
        batch.element_probs,
        batch.crystal_index,
        batch.n_sites,
    )
    with torch.no_grad():
        stale = pred.predict(stretched)["band_gap"]  # same edges, recomputed lengths
        assert pred._graph.src.numel() == n_edges
        pred.refresh(stretched)
        fresh = pred.predict(stretched)["band_gap"]
    assert pred._graph.src.numel() < n_edges  # fewer neighbours within the cutoff
    assert not torch.allclose(stale, fresh)


def test_supported_z_from_card_and_registry(tmp_path) -> None:
    model = tiny_model()
    pred = AlignnPredictor(model, "band_gap", "eV", card={"elements_z": [8, 22, 38]})
    assert pred.supported_z == frozenset({8, 22, 38})
    free = AlignnPredictor(
        model, "band_gap", "eV", card={"elements_z": [8]}, training_elements_only=False
    )
    assert free.supported_z == frozenset(range(1, 99))


def test_registry_builds_shipped_default() -> None:
    pred = build_predictor({"type": "alignn", "model": "perov5-formation-energy"})
    assert pred.properties == {"formation_energy_per_atom": "eV/atom"}
    batch = SoftCrystalBatch.from_structures(structures()[:1])
    out = pred.predict(batch)["formation_energy_per_atom"]
    assert out.shape == (1,) and torch.isfinite(out).all()


def legacy_model(seed: int = 0) -> AlignnModel:
    """alignn's original ``alignn`` architecture (BatchNorm), k-nearest graph, random weights."""
    torch.manual_seed(seed)
    config = {
        "neighbor_strategy": "k-nearest",
        "cutoff": 8.0,
        "max_neighbors": 12,
        "atom_features": "cgcnn",
        "model": {
            "name": "alignn",
            "alignn_layers": 1,
            "gcn_layers": 1,
            "hidden_features": 16,
            "embedding_features": 16,
            "edge_input_features": 16,
            "triplet_input_features": 8,
        },
    }
    model = AlignnModel(config)
    with torch.no_grad():  # non-trivial running statistics, as a trained checkpoint has
        for m in model.net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_legacy_alignn_state_dict_keys_match_alignn(monkeypatch) -> None:
    """The BatchNorm variant has exactly the keys of alignn.models.alignn.ALIGNN."""
    import alignn.models.alignn as legacy

    # ALIGNN's constructor needs DGL only for its parameter-free AvgPooling readout
    monkeypatch.setattr(legacy, "AvgPooling", torch.nn.Identity)
    ref = legacy.ALIGNN(
        legacy.ALIGNNConfig(
            name="alignn",
            alignn_layers=1,
            gcn_layers=1,
            hidden_features=16,
            embedding_features=16,
            edge_input_features=16,
            triplet_input_features=8,
        )
    )
    ours = legacy_model().net.state_dict()
    ours.pop("_species_table")
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.items()
    }


def test_legacy_knn_graph_matches_alignn_forward() -> None:
    """k-nearest graph from alignn's nearest_neighbor_edges/build_undirected_edgedata."""
    from alignn.graphs import build_undirected_edgedata, nearest_neighbor_edges
    from alignn.torch_graph_builder import TorchGraph, _line_graph_edges, batch_torch_graph_pairs

    model = legacy_model()
    structs = structures()
    pairs = []
    for s in structs:
        atoms = _jarvis_atoms(s)
        edges, _ = nearest_neighbor_edges(
            atoms=atoms, cutoff=8.0, max_neighbors=12, use_canonize=True
        )
        u, v, r, _ = build_undirected_edgedata(atoms, edges)
        feats = torch.stack([model.element_table[z - 1] for z in atoms.atomic_numbers])
        g = TorchGraph(
            num_nodes=len(s), src=u, dst=v, ndata={"atom_features": feats}, edata={"r": r}
        )
        lg_src, lg_dst = _line_graph_edges(u, v, len(s))
        pairs.append((g, TorchGraph(num_nodes=len(u), src=lg_src, dst=lg_dst)))
    g, lg = batch_torch_graph_pairs(pairs)
    with torch.no_grad():
        ref = model.net([g, lg, None])["out"]
        ours = AlignnPredictor(model, "band_gap", "eV").predict(
            SoftCrystalBatch.from_structures(structs)
        )["band_gap"]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


def test_legacy_figshare_style_zip_loads(tmp_path) -> None:
    """config.json + checkpoint_<epoch>.pt ({"model": state_dict, ...}) in a sub-folder."""
    import json
    import zipfile

    from smoacs_flows.predictors.alignn import build

    model = legacy_model()
    state = {k: v for k, v in model.net.state_dict().items() if k != "_species_table"}
    zpath = tmp_path / "mp_gappbe_alignn.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("mp_gappbe/config.json", json.dumps({**model.config, "target": "gappbe"}))
        for epoch, st in ((9, {k: torch.zeros_like(v) for k, v in state.items()}), (10, state)):
            path = tmp_path / f"c{epoch}.pt"
            torch.save({"model": st, "optimizer": {"lr": torch.tensor(1e-3)}}, path)
            zf.write(path, f"mp_gappbe/checkpoint_{epoch}.pt")
    pred = build(model=zpath)
    assert pred.properties == {"band_gap": "eV"}
    batch = SoftCrystalBatch.from_structures(structures())
    with torch.no_grad():
        expected = model(batch, model.graph(batch))
        assert torch.equal(pred.predict(batch)["band_gap"], expected)
