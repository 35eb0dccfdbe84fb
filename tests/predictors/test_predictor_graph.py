"""The fixed-topology periodic graph shared by the CHGNet and MatterSim predictors."""

from __future__ import annotations

import itertools

import pytest
import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.predictors._graph import (
    build_periodic_graph,
    ordered_pairs_by_center,
    reverse_edges,
)
from smoacs_flows.predictors.base import SoftCrystalBatch


def _batch() -> SoftCrystalBatch:
    simple_cubic = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    tilted = Structure(
        Lattice([[4.1, 0.2, 0.0], [0.3, 3.8, 0.1], [0.0, 0.4, 4.4]]),
        ["Na", "Cl", "K"],
        [[0.1, 0.2, 0.3], [0.6, 0.5, 0.55], [0.95, 0.05, 0.7]],
    )
    return SoftCrystalBatch.from_structures([simple_cubic, tilted])


def test_simple_cubic_has_six_nearest_neighbours() -> None:
    batch = _batch()
    graph = build_periodic_graph(batch, cutoff=3.1)
    on_first = graph.edge_crystal == 0
    assert int(on_first.sum()) == 6  # +-a, +-b, +-c images of the single atom
    images = {tuple(int(v) for v in img) for img in graph.image[on_first]}
    assert images == {(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)}


def test_edge_vectors_reproduce_distances_and_survive_wrapping() -> None:
    batch = _batch()
    graph = build_periodic_graph(batch, cutoff=5.0)
    lengths = graph.edge_vectors(batch.lattice, batch.frac_coords).norm(dim=1)
    torch.testing.assert_close(lengths.double(), graph.distance, atol=1e-5, rtol=0)
    assert float(lengths.max()) < 5.0
    # lattice translations of the sites (as a wrapping parametrisation does) change nothing
    shifted = batch.frac_coords + torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 3.0]]).repeat(2, 1)
    torch.testing.assert_close(graph.edge_vectors(batch.lattice, shifted).norm(dim=1), lengths)
    # a small move across the cell boundary follows the same neighbour
    moved = batch.frac_coords.clone()
    moved[3, 0] = 0.001  # site 3 at x = 0.95 -> 1.001, stored wrapped as 0.001
    moved_ref = batch.frac_coords.clone()
    moved_ref[3, 0] = 1.001
    torch.testing.assert_close(
        graph.edge_vectors(batch.lattice, moved), graph.edge_vectors(batch.lattice, moved_ref)
    )


def test_reverse_edges_pair_each_edge_with_its_reverse() -> None:
    graph = build_periodic_graph(_batch(), cutoff=6.0)
    rev = reverse_edges(graph)
    assert torch.equal(rev[rev], torch.arange(graph.n_edges))
    assert torch.equal(graph.center[rev], graph.neighbor)
    assert torch.equal(graph.image[rev], -graph.image)
    assert bool((rev != torch.arange(graph.n_edges)).all())


def test_ordered_pairs_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(3)
    center = torch.randint(0, 5, (40,), generator=gen)
    edges = torch.randperm(40, generator=gen)[:25]
    pairs = {tuple(p) for p in ordered_pairs_by_center(center, edges).tolist()}
    expected = {
        (int(a), int(b))
        for a, b in itertools.permutations(edges.tolist(), 2)
        if center[a] == center[b]
    }
    assert pairs == expected
    assert ordered_pairs_by_center(center, edges[:0]).shape == (0, 2)


def test_collapsed_cell_gets_no_edges_instead_of_an_unbounded_search() -> None:
    batch = _batch().detach()
    batch.lattice = batch.lattice.clone()
    batch.lattice[1, 2] *= 1e-3  # tilted cell flattened to ~0.07 Å^3 per atom
    with pytest.warns(RuntimeWarning, match="crystal 1: degenerate geometry"):
        graph = build_periodic_graph(batch, cutoff=6.0)
    assert int((graph.edge_crystal == 1).sum()) == 0
    assert int((graph.edge_crystal == 0).sum()) > 0
