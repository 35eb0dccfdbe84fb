"""ALIGNN's inputs without DGL: the CGCNN element table and fixed neighbour / line graphs.

The neighbour graph (radius ``cutoff``, optional ``max_neighbors``, or alignn's legacy
``k-nearest`` graph) and its line graph are built from detached geometry; the network in
:mod:`smoacs_flows.predictors.alignn_network` recomputes bond vectors from them differentiably.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from smoacs_flows.predictors.base import N_ELEMENTS, SoftCrystalBatch

# --------------------------------------------------------------------------------------------
# Element features
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _feature_table_np(atom_features: str = "cgcnn") -> tuple[np.ndarray, tuple[int, ...]]:
    from ase.data import chemical_symbols
    from jarvis.core.specie import get_node_attributes

    rows, ok = [], []
    width = None
    for z in range(1, N_ELEMENTS + 1):
        try:
            feat = np.asarray(
                get_node_attributes(chemical_symbols[z], atom_features=atom_features), float
            )
        except Exception:  # jarvis raises various errors for unknown elements
            feat = None
        if feat is not None and np.all(np.isfinite(feat)):
            width = width or feat.shape[0]
            if feat.shape[0] == width:
                rows.append(feat)
                ok.append(z)
                continue
        rows.append(None)
    table = np.zeros((N_ELEMENTS, width), dtype=float)
    for z in ok:
        table[z - 1] = rows[z - 1]
    return table, tuple(ok)


def element_feature_table(
    atom_features: str = "cgcnn", dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, frozenset[int]]:
    """The (98, F) element feature table (row j = Z j+1) and the Z that have features."""
    table, ok = _feature_table_np(atom_features)
    return torch.tensor(table, dtype=dtype or torch.get_default_dtype()), frozenset(ok)


# --------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------


@dataclass
class CrystalGraph:
    """A fixed (batched) neighbour graph and line graph over the sites of a batch.

    ``src``/``dst`` index sites of the whole batch, ``shift`` holds integer cell offsets (as
    floats) so that ``r = x[dst] - x[src] + shift @ L``; ``lg_src``/``lg_dst`` index edges.
    """

    src: torch.Tensor  # (E,) long
    dst: torch.Tensor  # (E,) long
    shift: torch.Tensor  # (E, 3)
    edge_crystal: torch.Tensor  # (E,) long
    lg_src: torch.Tensor  # (T,) long
    lg_dst: torch.Tensor  # (T,) long

    def to(self, device: str | torch.device) -> CrystalGraph:
        """Move every tensor to ``device``."""
        return CrystalGraph(*(t.to(device) for t in self.__dict__.values()))


def neighbor_list(
    lattice: np.ndarray, frac_coords: np.ndarray, cutoff: float, max_neighbors: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic neighbour list (src, dst, integer shift) within ``cutoff``.

    Same selection as alignn's ``torch_neighbor_list`` (pure-torch path): every image with
    ``1e-8 < |r|^2 <= cutoff^2``; with ``max_neighbors``, the closest ones per source.
    Vectorised numpy, so that rebuilding graphs for a batch of small cells stays cheap.
    """
    lat = np.asarray(lattice, dtype=float)
    pos = np.asarray(frac_coords, dtype=float) @ lat
    n_max = np.ceil(cutoff * np.linalg.norm(np.linalg.inv(lat).T, axis=1)).astype(int)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in n_max], indexing="ij")
    shifts = np.stack([g.reshape(-1) for g in grids], axis=1).astype(float)  # (K, 3)
    offs = shifts @ lat
    rvec = pos[None, None, :, :] + offs[:, None, None, :] - pos[None, :, None, :]  # (K, n, n, 3)
    d2 = np.einsum("kijx,kijx->kij", rvec, rvec)
    k_idx, src, dst = np.nonzero((d2 <= cutoff * cutoff) & (d2 > 1e-8))
    shift = shifts[k_idx]
    if max_neighbors is not None and max_neighbors > 0 and src.size:
        dist = d2[k_idx, src, dst]
        order = np.lexsort((dist, src))
        src, dst, shift = src[order], dst[order], shift[order]
        starts = np.searchsorted(src, np.arange(pos.shape[0]))
        keep = np.arange(src.size) - starts[src] < max_neighbors
        src, dst, shift = src[keep], dst[keep], shift[keep]
    return src.astype(np.int64), dst.astype(np.int64), shift


def line_graph(src: np.ndarray, dst: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, ...]:
    """Line-graph edges (A, B) for allowed edges A = (u, v), B = (v, w) (alignn's convention)."""
    ids = np.nonzero(allowed)[0]
    order = np.argsort(src[ids], kind="stable")
    sorted_ids, sorted_src = ids[order], src[ids][order]
    n = int(max(src.max(initial=-1), dst.max(initial=-1)) + 1)
    start = np.searchsorted(sorted_src, np.arange(n), side="left")
    end = np.searchsorted(sorted_src, np.arange(n), side="right")
    counts = (end - start)[dst[ids]]
    lg_src = np.repeat(ids, counts)
    first = np.repeat(start[dst[ids]], counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    lg_dst = sorted_ids[first + within]
    return lg_src.astype(np.int64), lg_dst.astype(np.int64)


def crystal_graph_single(
    lattice: torch.Tensor,
    frac_coords: torch.Tensor,
    cutoff: float,
    three_body_cutoff: float,
    max_neighbors: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges (src, dst, shift) and line-graph edges of one crystal, from detached geometry.

    Triplets use only edges no longer than ``three_body_cutoff``, as alignn's
    ``build_pure_torch_graph`` does.
    """
    lat = lattice.detach().cpu().double().numpy()
    frac = frac_coords.detach().cpu().double().numpy()
    src, dst, shift = neighbor_list(lat, frac, float(cutoff), max_neighbors)
    r = (frac @ lat)[dst] - (frac @ lat)[src] + shift @ lat
    allowed = np.linalg.norm(r, axis=1) <= three_body_cutoff
    lg_src, lg_dst = line_graph(src, dst, allowed)
    return (
        torch.from_numpy(src),
        torch.from_numpy(dst),
        torch.from_numpy(shift).to(torch.get_default_dtype()),
        torch.from_numpy(lg_src),
        torch.from_numpy(lg_dst),
    )


def knn_graph_single(
    lattice: torch.Tensor,
    frac_coords: torch.Tensor,
    cutoff: float,
    max_neighbors: int,
    use_canonize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """alignn's legacy ``k-nearest`` graph (``Graph.atom_dgl_multigraph``) of one crystal.

    Edges come from alignn's own ``nearest_neighbor_edges`` (every neighbour out to the shell
    of the ``max_neighbors``-th, canonised, then both directions, as ``build_undirected_
    edgedata`` does); the line graph connects all edge pairs (DGL ``line_graph``, backtracking).
    """
    from alignn.graphs import nearest_neighbor_edges
    from jarvis.core.atoms import Atoms

    lat = lattice.detach().cpu().double().numpy()
    frac = frac_coords.detach().cpu().double().numpy()
    atoms = Atoms(lattice_mat=lat, coords=frac, elements=["H"] * len(frac), cartesian=False)
    edges, _ = nearest_neighbor_edges(
        atoms=atoms, cutoff=cutoff, max_neighbors=max_neighbors, use_canonize=use_canonize
    )
    src, dst, shift = [], [], []
    for (u, v), images in edges.items():
        for image in images:
            img = np.asarray(image, dtype=float)
            src += [u, v]
            dst += [v, u]
            shift += [img, -img]
    src_a = np.asarray(src, dtype=np.int64)
    dst_a = np.asarray(dst, dtype=np.int64)
    lg_src, lg_dst = line_graph(src_a, dst_a, np.ones(len(src_a), dtype=bool))
    return (
        torch.from_numpy(src_a),
        torch.from_numpy(dst_a),
        torch.tensor(np.asarray(shift).reshape(-1, 3), dtype=torch.get_default_dtype()),
        torch.from_numpy(lg_src),
        torch.from_numpy(lg_dst),
    )


def batch_graphs(
    parts: list[tuple[torch.Tensor, ...]], n_sites: list[int], device: str | torch.device
) -> CrystalGraph:
    """Concatenate per-crystal graphs, offsetting node and edge indices."""
    srcs, dsts, shifts, ecs, lgs, lgd = [], [], [], [], [], []
    node_off = edge_off = 0
    for b, ((src, dst, shift, lg_src, lg_dst), n) in enumerate(zip(parts, n_sites)):
        srcs.append(src + node_off)
        dsts.append(dst + node_off)
        shifts.append(shift)
        ecs.append(torch.full((src.shape[0],), b, dtype=torch.long))
        lgs.append(lg_src + edge_off)
        lgd.append(lg_dst + edge_off)
        node_off += n
        edge_off += int(src.shape[0])
    dtype = torch.get_default_dtype()
    return CrystalGraph(
        src=torch.cat(srcs).long(),
        dst=torch.cat(dsts).long(),
        shift=torch.cat(shifts).to(dtype),
        edge_crystal=torch.cat(ecs),
        lg_src=torch.cat(lgs).long(),
        lg_dst=torch.cat(lgd).long(),
    ).to(device)


def build_batch_graph(
    batch: SoftCrystalBatch,
    cutoff: float,
    three_body_cutoff: float,
    max_neighbors: int | None,
    strategy: str = "pure_torch",
) -> CrystalGraph:
    """Neighbour and line graphs for every crystal in ``batch`` (detached geometry).

    ``strategy`` is ``"pure_torch"`` (radius graph, triplets within ``three_body_cutoff``) or
    ``"k-nearest"`` (alignn's legacy graph, see ``knn_graph_single``).
    """
    lat = batch.lattice.detach().cpu()
    frac = batch.frac_coords.detach().cpu()
    counts = [int(n) for n in batch.n_sites.cpu()]
    parts, start = [], 0
    for b, n in enumerate(counts):
        if strategy == "k-nearest":
            parts.append(
                knn_graph_single(lat[b], frac[start : start + n], cutoff, int(max_neighbors or 12))
            )
        else:
            parts.append(
                crystal_graph_single(
                    lat[b], frac[start : start + n], cutoff, three_body_cutoff, max_neighbors
                )
            )
        start += n
    return batch_graphs(parts, counts, batch.device)
