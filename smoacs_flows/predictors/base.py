"""The predictor interface SMOACS backpropagates through.

A predictor maps a batch of *soft* crystals (lattice, fractional coordinates and a probability
distribution over elements at every site) to named properties. Everything is a torch tensor and
must be differentiable with respect to ``lattice``, ``frac_coords`` and ``element_probs``.

Conventions
-----------
* ``element_probs`` has ``N_ELEMENTS`` (98) columns: column ``j`` is the element with Z = j + 1.
* Sites of all crystals are concatenated; ``crystal_index[i]`` says which crystal site ``i``
  belongs to (sorted, contiguous), ``n_sites[b]`` how many sites crystal ``b`` has.
* ``predict`` returns ``{property: tensor}``. Per-crystal properties have shape ``(B,)``;
  per-site properties are named ``site_*`` and have shape ``(N,)``.
* Standard property names and units: ``energy_per_atom`` (eV/atom),
  ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV), ``magmom_total`` (the *net*
  moment, μB per cell, e.g. ALIGNN JARVIS ``magmom_oszicar``), ``magmom_abs_total`` (Σ|m_i|,
  μB per cell, from predictors of moment magnitudes such as CHGNet), ``site_magmoms`` (μB).
* Predictors whose neighbour graph is not differentiable set ``needs_graph_refresh = True`` and
  rebuild their edge lists in ``refresh(batch)``; between refreshes, edge vectors are recomputed
  differentiably from the lattice and coordinates over the fixed edge list.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from smoacs_flows.errors import SpecError

N_ELEMENTS = 98


@dataclass
class SoftCrystalBatch:
    """A batch of crystals with soft (probabilistic) element occupations."""

    lattice: torch.Tensor  # (B, 3, 3), rows are the lattice vectors, Å
    frac_coords: torch.Tensor  # (N, 3)
    element_probs: torch.Tensor  # (N, 98), rows sum to 1
    crystal_index: torch.Tensor  # (N,) long
    n_sites: torch.Tensor  # (B,) long

    @property
    def n_crystals(self) -> int:
        """Number of crystals in the batch."""
        return int(self.n_sites.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.frac_coords.device

    def cart_coords(self) -> torch.Tensor:
        """Cartesian coordinates (N, 3), differentiable in lattice and coordinates."""
        lat = self.lattice[self.crystal_index]
        return torch.einsum("ni,nij->nj", self.frac_coords, lat)

    def volumes(self) -> torch.Tensor:
        """Cell volumes (B,), Å^3."""
        return torch.linalg.det(self.lattice).abs()

    def detach(self) -> SoftCrystalBatch:
        """A copy with every tensor detached from the graph."""
        return SoftCrystalBatch(
            self.lattice.detach(),
            self.frac_coords.detach(),
            self.element_probs.detach(),
            self.crystal_index,
            self.n_sites,
        )

    @classmethod
    def from_structures(
        cls, structures: Sequence[Any], device: str | torch.device = "cpu"
    ) -> SoftCrystalBatch:
        """One-hot batch from ordered pymatgen Structures."""
        lats, fracs, zs, n = [], [], [], []
        for s in structures:
            lats.append(np.asarray(s.lattice.matrix, dtype=float))
            fracs.append(np.asarray(s.frac_coords, dtype=float))
            zs.extend(site.specie.Z for site in s)
            n.append(len(s))
        zt = torch.tensor(zs, dtype=torch.long)
        if (zt < 1).any() or (zt > N_ELEMENTS).any():
            raise SpecError(f"elements must have 1 <= Z <= {N_ELEMENTS}")
        probs = torch.nn.functional.one_hot(zt - 1, N_ELEMENTS).to(torch.get_default_dtype())
        n_sites = torch.tensor(n, dtype=torch.long)
        return cls(
            lattice=torch.tensor(np.stack(lats), dtype=torch.get_default_dtype()).to(device),
            frac_coords=torch.tensor(np.concatenate(fracs), dtype=torch.get_default_dtype()).to(
                device
            ),
            element_probs=probs.to(device),
            crystal_index=torch.repeat_interleave(torch.arange(len(n)), n_sites).to(device),
            n_sites=n_sites.to(device),
        )


class Predictor(ABC):
    """A differentiable property predictor over soft crystals."""

    #: short name used in records, e.g. "chgnet"
    name: str = "predictor"
    #: property name -> units
    properties: dict[str, str] = {}
    #: atomic numbers the model can represent (None = all 1..98); others are masked out
    supported_z: frozenset[int] | None = None
    #: True when the neighbour graph is rebuilt only at refresh steps
    needs_graph_refresh: bool = False

    @abstractmethod
    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        """Return ``{property: tensor}`` for the batch (see module docstring)."""

    def refresh(self, batch: SoftCrystalBatch) -> None:  # noqa: B027 - optional hook
        """Rebuild the neighbour graph from the batch's current (detached) geometry."""

    def to(self, device: str | torch.device) -> Predictor:
        """Move the predictor's parameters to ``device``."""
        return self

    def for_scoring(self) -> Predictor:
        """The predictor that scores exported candidates: itself unless an optimisation-only
        setting (e.g. ALIGNN's ``gate``) is active."""
        return self


_REGISTRY: dict[str, str | Callable[..., Predictor]] = {
    "chgnet": "smoacs_flows.predictors.chgnet:build",
    "alignn": "smoacs_flows.predictors.alignn:build",
    "mattersim": "smoacs_flows.predictors.mattersim:build",
    "megnet": "smoacs_flows.predictors.megnet:build",
}


def register_predictor(type_name: str, factory: str | Callable[..., Predictor]) -> None:
    """Register a predictor factory (a callable or a ``"module:function"`` string)."""
    _REGISTRY[type_name] = factory


def build_predictor(spec: dict[str, Any], device: str | torch.device = "cpu") -> Predictor:
    """Build a predictor from a spec such as ``{"type": "chgnet"}``.

    Every key other than ``type`` is passed to the factory as a keyword argument.
    """
    spec = dict(spec)
    type_name = spec.pop("type", None)
    if type_name not in _REGISTRY:
        raise SpecError(
            f"predictor type {type_name!r} is unknown; choose one of {sorted(_REGISTRY)}"
        )
    factory = _REGISTRY[type_name]
    if isinstance(factory, str):
        module, func = factory.split(":")
        factory = getattr(importlib.import_module(module), func)
    return factory(device=device, **spec)
