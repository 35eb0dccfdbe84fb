"""Fixed-topology periodic neighbour graphs for differentiable predictors.

Neighbour *lists* are discrete: which pairs (and which periodic images) lie within a cutoff is
decided once, at refresh time, from the detached geometry. Between refreshes the edge list is
kept and edge vectors are recomputed differentiably from the current lattice and fractional
coordinates (:meth:`PeriodicGraph.edge_vectors`).

Coordinates may be wrapped (jump by a lattice vector) between refreshes; the graph follows
each site by its minimum-image displacement from the refresh geometry, so edges stay attached
to the same physical neighbour as long as no site moves more than half a cell between refreshes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pymatgen.optimization.neighbors import find_points_in_spheres

from smoacs_flows.predictors.base import SoftCrystalBatch

_SELF_TOL = 1e-8
#: cells below this volume per atom (Å^3) are treated as collapsed (real solids: > 5 Å^3)
MIN_VOLUME_PER_ATOM = 1.0


@dataclass
class PeriodicGraph:
    """Directed periodic edges of a batch of crystals, fixed between refreshes.

    Edge ``e`` points from site ``center[e]`` to the periodic image ``image[e]`` of site
    ``neighbor[e]`` (site indices are global over the batch). ``distance`` holds the edge
    lengths at refresh time (for cutoff decisions only; never differentiate through it).
    """

    center: torch.Tensor  # (E,) long
    neighbor: torch.Tensor  # (E,) long
    image: torch.Tensor  # (E, 3) float, integer-valued image relative to wrapped coords
    edge_crystal: torch.Tensor  # (E,) long
    distance: torch.Tensor  # (E,) float, refresh-time lengths
    frac_ref: torch.Tensor  # (N, 3) refresh-time fractional coordinates (unwrapped)
    wrap_ref: torch.Tensor  # (N, 3) floor(frac_ref): wrapped = frac_ref - wrap_ref
    n_sites: torch.Tensor  # (B,) long, topology the graph was built for (on the CPU)

    def __post_init__(self) -> None:
        self._source_n_sites: torch.Tensor | None = None

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return int(self.center.shape[0])

    def matches(self, batch: SoftCrystalBatch) -> bool:
        """Whether the graph was built for a batch of the same topology (sites per crystal).

        The very ``n_sites`` tensor the graph was built from matches without a look at its
        values (no device synchronisation on the per-step path).
        """
        if batch.n_sites is self._source_n_sites:
            return True
        same = self.n_sites.shape == batch.n_sites.shape and bool(
            torch.equal(self.n_sites, batch.n_sites.detach().cpu())
        )
        if same:
            self._source_n_sites = batch.n_sites
        return same

    def site_frac(self, frac_coords: torch.Tensor) -> torch.Tensor:
        """Fractional coordinates continuous with the refresh geometry (differentiable).

        ``frac - offset`` where the integer offset (detached) makes each site's position the
        minimum-image continuation of its wrapped refresh-time position.
        """
        ref = self.frac_ref.to(frac_coords)
        delta = frac_coords.detach() - ref
        offset = self.wrap_ref.to(frac_coords) + torch.round(delta)
        return frac_coords - offset

    def edge_vectors(self, lattice: torch.Tensor, frac_coords: torch.Tensor) -> torch.Tensor:
        """Cartesian vectors from each edge's centre to its neighbour image, (E, 3), Å."""
        f = self.site_frac(frac_coords)
        dfrac = f[self.neighbor] - f[self.center] + self.image.to(f)
        return torch.einsum("ei,eij->ej", dfrac, lattice[self.edge_crystal])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PeriodicGraph:
        """A copy on ``device``; ``dtype`` (the compute dtype) converts the per-step float
        tensors once here instead of at every step. ``n_sites`` stays on the CPU."""
        per_step = {"image", "frac_ref", "wrap_ref"}
        moved = PeriodicGraph(
            *(
                getattr(self, k)
                if k == "n_sites"
                else getattr(self, k).to(device, dtype if k in per_step and dtype else None)
                for k in self.__dataclass_fields__
            )  # type: ignore[arg-type]
        )
        moved._source_n_sites = self._source_n_sites
        return moved


def build_periodic_graph(
    batch: SoftCrystalBatch, cutoff: float, min_volume_per_atom: float = MIN_VOLUME_PER_ATOM
) -> PeriodicGraph:
    """All directed edges shorter than ``cutoff`` Å (self-images included, self-loops not).

    One call of pymatgen's compiled cell-list search per crystal; no per-atom Python loops.
    A crystal whose geometry is not finite or whose cell has collapsed below
    ``min_volume_per_atom`` Å^3 gets no edges (with a warning) instead of an unbounded
    neighbour search; its atoms are then isolated, and the engine's own checks (NaN guard,
    minimum distance) deal with it.
    """
    lat = batch.lattice.detach().cpu().double().numpy()
    frac = batch.frac_coords.detach().cpu().double()
    wrap = torch.floor(frac)
    fw = (frac - wrap).numpy()
    counts = batch.n_sites.cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pbc = np.ones(3, dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    for b, (s, n) in enumerate(zip(starts, counts)):
        if n == 0:
            continue
        volume = abs(float(np.linalg.det(lat[b]))) if np.isfinite(lat[b]).all() else 0.0
        if volume / n < min_volume_per_atom or not np.isfinite(fw[s : s + n]).all():
            warnings.warn(
                f"crystal {b}: degenerate geometry (volume {volume:.3g} Å^3 for {n} sites); "
                "it gets no neighbour edges until the next refresh",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        cart = np.ascontiguousarray(fw[s : s + n] @ lat[b])
        c, j, img, d = find_points_in_spheres(
            cart,
            cart,
            r=float(cutoff),
            pbc=pbc,
            lattice=np.ascontiguousarray(lat[b]),
            tol=_SELF_TOL,
        )
        keep = (c != j) | (d > _SELF_TOL)
        c, j, img, d = c[keep], j[keep], img[keep], d[keep]
        parts.append((c + s, j + s, img, d, np.full(len(c), b)))
    if parts:
        c, j, img, d, eb = (np.concatenate(x) for x in zip(*parts))
    else:
        c = j = eb = np.zeros(0, dtype=np.int64)
        img, d = np.zeros((0, 3)), np.zeros(0)
    graph = PeriodicGraph(
        center=torch.as_tensor(c, dtype=torch.long),
        neighbor=torch.as_tensor(j, dtype=torch.long),
        image=torch.as_tensor(np.rint(img), dtype=torch.float64),
        edge_crystal=torch.as_tensor(eb, dtype=torch.long),
        distance=torch.as_tensor(d, dtype=torch.float64),
        frac_ref=frac,
        wrap_ref=wrap,
        n_sites=batch.n_sites.detach().cpu().clone(),
    )
    graph._source_n_sites = batch.n_sites
    return graph


def reverse_edges(graph: PeriodicGraph) -> torch.Tensor:
    """Index of the reverse of every directed edge ((i→j, n) ↔ (j→i, −n)), shape (E,).

    The neighbour search is symmetric, so every edge has exactly one reverse.
    """
    if graph.n_edges == 0:
        return torch.zeros(0, dtype=torch.long)
    img = graph.image.round().long()
    span = int(img.abs().max()) if img.numel() else 0
    base = 2 * span + 1
    n_total = int(graph.frac_ref.shape[0])

    def key(i: torch.Tensor, j: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        code = ((m[:, 0] + span) * base + (m[:, 1] + span)) * base + (m[:, 2] + span)
        return (i * n_total + j) * base**3 + code

    fwd = key(graph.center, graph.neighbor, img)
    rev = key(graph.neighbor, graph.center, -img)
    order = torch.argsort(fwd)
    pos = torch.searchsorted(fwd[order], rev)
    pos = pos.clamp(max=len(order) - 1)
    found = fwd[order][pos] == rev
    if not bool(found.all()):
        raise RuntimeError("neighbour list is not symmetric: an edge has no reverse")
    return order[pos]


def ordered_pairs_by_center(center: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """All ordered pairs (e1, e2), e1 != e2, of the given edges that share a centre site.

    ``edges`` are edge indices, ``center`` the centre site of every edge (indexed by edge id).
    Returns (P, 2) long. Vectorised: no loop over atoms.
    """
    if edges.numel() == 0:
        return torch.zeros((0, 2), dtype=torch.long)
    c = center[edges]
    order = torch.argsort(c, stable=True)
    e_sorted, c_sorted = edges[order], c[order]
    _, counts = torch.unique_consecutive(c_sorted, return_counts=True)
    group_start = torch.cumsum(counts, 0) - counts
    # every sorted edge p pairs with each member of its group
    group_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
    reps = counts[group_of]
    first = torch.repeat_interleave(torch.arange(len(e_sorted)), reps)
    # position within the group for the second member
    run_start = torch.cumsum(reps, 0) - reps
    within = torch.arange(int(reps.sum())) - torch.repeat_interleave(run_start, reps)
    second = group_start[group_of[first]] + within
    keep = first != second
    return torch.stack([e_sorted[first[keep]], e_sorted[second[keep]]], dim=1)


def fixed_graph_inputs(
    predictor: Any, batch: SoftCrystalBatch, max_z: int
) -> tuple[Any, torch.dtype, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shared start of a fixed-topology predictor's ``predict``: refresh the graph if the
    batch no longer matches it, then move lattice, fractional coordinates and element
    probabilities (first ``max_z`` elements) to the predictor's device and dtype.

    Returns ``(graph, output dtype, lattice, frac_coords, element_probs)``.
    """
    if predictor._graph is None or not predictor._graph.edges.matches(batch):
        predictor.refresh(batch)
    g = predictor._graph
    assert g is not None
    dev, dt = predictor.device, predictor.dtype
    return (
        g,
        batch.lattice.dtype,
        batch.lattice.to(dev, dt),
        batch.frac_coords.to(dev, dt),
        batch.element_probs.to(dev, dt)[:, :max_z],
    )
