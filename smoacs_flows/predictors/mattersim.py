"""Soft-element MatterSim (M3GNet) energy per atom, differentiable end to end.

The checkpoint is loaded with MatterSim's own ``Potential.from_checkpoint`` (a local path, or a
released model by name from MatterSim's download cache ``~/.local/mattersim/pretrained_models``,
downloading it there when the network allows). On soft crystals:

* the atom embedding is MatterSim's linear embedding applied to the element *distribution*
  (it is linear in the one-hot vector, so this is the distribution-weighted average of the
  per-element embeddings); the per-element energy scale/shift is averaged the same way;
* two-body edges (``cutoff``, 5 Å) and three-body angles (bonds within ``threebody_cutoff``,
  4 Å) are built at :meth:`refresh` from the detached geometry and kept fixed; edge vectors,
  lengths and angles are recomputed differentiably from the lattice and coordinates;
* MatterSim's modules (basis layers, ``MainBlock`` interactions, final gated MLP) run with the
  checkpoint's weights, mirroring ``M3Gnet.forward``.

With one-hot distributions the energy equals ``MatterSimCalculator`` on the same structure.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.predictors._graph import (
    PeriodicGraph,
    build_periodic_graph,
    fixed_graph_inputs,
    ordered_pairs_by_center,
)
from smoacs_flows.predictors.base import N_ELEMENTS, Predictor, SoftCrystalBatch

#: released checkpoints MatterSim can fetch by name -> file name in its cache
RELEASED = {
    "mattersim-v1.0.0-1m": "mattersim-v1.0.0-1M.pth",
    "mattersim-v1.0.0-5m": "mattersim-v1.0.0-5M.pth",
}
DEFAULT_MODEL = "MatterSim-v1.0.0-1M"
_DOWNLOAD_HOST = ("raw.githubusercontent.com", 443)
_UNSUPPORTED_MASS_TOL = 1e-6
_FIX = (
    "give a local checkpoint with `model: /path/to/mattersim-v1.0.0-1M.pth` in the predictor "
    "spec, or use CHGNet instead (predictor type `chgnet`, `--mlip chgnet`)"
)


def mattersim_cache_dir() -> Path:
    """MatterSim's own download cache (where ``Potential.from_checkpoint`` looks by name)."""
    return Path(os.path.expanduser("~/.local/mattersim/pretrained_models"))


def _network_reachable(timeout: float = 3.0) -> bool:
    """Whether MatterSim's download host accepts a TCP connection (a quick probe, so a
    sandbox without network fails fast instead of hanging in an untimed download)."""
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def resolve_checkpoint(model: str | os.PathLike | None, download: bool = True) -> Path:
    """The local checkpoint file for ``model`` (a path or a released name), or InputError.

    A released name found in MatterSim's cache is used as is; a missing one is downloaded
    through MatterSim's own helper when ``download`` is true and the network is reachable.
    """
    name = os.fspath(model) if model is not None else DEFAULT_MODEL
    key = name.lower().removesuffix(".pth")
    if key in RELEASED:
        path = mattersim_cache_dir() / RELEASED[key]
        if path.exists():
            return path
        if not download:
            raise InputError(
                f"mattersim: {name} is not in MatterSim's cache ({path}) and downloads are "
                f"disabled; {_FIX}"
            )
        if not _network_reachable():
            raise InputError(
                f"mattersim: {name} is not in MatterSim's cache ({path}) and cannot be "
                f"downloaded (no network); {_FIX}"
            )
        from mattersim.utils.download_utils import download_checkpoint

        try:
            download_checkpoint(RELEASED[key], save_folder=str(path.parent))
        except Exception as exc:  # HTTP or connection errors
            raise InputError(f"mattersim: downloading {name} failed ({exc}); {_FIX}") from exc
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        raise InputError(
            f"mattersim: model {name!r} is neither a released model "
            f"({', '.join(sorted({v.removesuffix('.pth') for v in RELEASED.values()}))}) "
            f"nor an existing checkpoint file; {_FIX}"
        )
    return path


def _validate_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check its layout."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"mattersim: cannot read checkpoint {path}: {exc}") from exc
    missing = {"model_name", "model_args", "model"} - set(ckpt if isinstance(ckpt, dict) else {})
    if missing:
        raise InputError(
            f"mattersim: checkpoint {path} lacks {sorted(missing)}; expected a MatterSim "
            "checkpoint {model_name, model_args, model}"
        )
    if ckpt["model_name"] != "m3gnet":
        raise InputError(
            f"mattersim: checkpoint {path} holds model {ckpt['model_name']!r}, only 'm3gnet' "
            "is supported"
        )
    return ckpt


def load_potential(
    model: Any = None, device: str | torch.device = "cpu", download: bool = True
) -> Any:
    """Load a MatterSim ``Potential`` (path, released name, or an existing Potential)."""
    from mattersim.forcefield.potential import Potential

    if isinstance(model, Potential):
        return model
    if model is not None and not isinstance(model, str | os.PathLike):
        raise SpecError(f"mattersim: model must be a path or a released name, not {model!r}")
    path = resolve_checkpoint(model, download=download)
    ckpt = _validate_checkpoint(path)
    try:
        potential = Potential.from_checkpoint(
            load_path=str(path), device=str(device), load_training_state=False
        )
    except Exception as exc:
        raise InputError(f"mattersim: cannot load checkpoint {path}: {exc}") from exc
    # MatterSim loads with strict=False: refuse silently random-initialised parameters
    absent = sorted(set(potential.model.state_dict()) - set(ckpt["model"]))
    if absent:
        raise InputError(
            f"mattersim: checkpoint {path} does not match the M3GNet architecture; "
            f"missing parameters: {absent[:5]}{' ...' if len(absent) > 5 else ''}"
        )
    return potential


@dataclass
class _M3gGraph:
    """M3GNet's bond list and three-body list for one batch topology (on the model device)."""

    edges: PeriodicGraph
    edge_index: torch.Tensor  # (2, E) sender (center), receiver (neighbour)
    triples: torch.Tensor  # (T, 2) bond ij, bond ik sharing center i
    num_bonds: torch.Tensor  # (B,)
    num_triple_ij: torch.Tensor  # (E, 1)
    crystal_index: torch.Tensor  # (N,)
    n_sites: torch.Tensor  # (B,)


class MatterSimPredictor(Predictor):
    """MatterSim (M3GNet) over soft crystals: ``energy_per_atom``."""

    name = "mattersim"
    properties = {"energy_per_atom": "eV/atom"}
    needs_graph_refresh = True

    def __init__(
        self,
        potential: Any,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        skin: float = 0.0,
    ) -> None:
        """Wrap a loaded MatterSim ``Potential`` (its parameters are frozen here).

        ``skin`` (Å) widens both cutoffs at graph build; edges in the skin contribute zero
        (M3GNet's smooth cutoffs vanish there) until atoms move inside the cutoff.
        """
        if skin < 0:
            raise SpecError(f"mattersim: skin must be >= 0 Å, got {skin}")
        self.potential = potential
        self.model = potential.model.to(device=device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        self.skin = float(skin)
        args = self.model.model_args
        self.cutoff = float(args["cutoff"])
        self.threebody_cutoff = float(args["threebody_cutoff"])
        self.max_z = int(args["max_z"])
        self.supported_z = frozenset(range(1, min(self.max_z, N_ELEMENTS) + 1))
        self._graph: _M3gGraph | None = None

    def refresh(self, batch: SoftCrystalBatch) -> None:
        """Rebuild the bond and three-body lists from the batch's current geometry."""
        extra = batch.element_probs.detach()[:, self.max_z :].sum(dim=1)
        bad = torch.nonzero(extra > _UNSUPPORTED_MASS_TOL).view(-1)
        if bad.numel():
            i = int(bad[0])
            raise InputError(
                f"mattersim: site {i} puts probability {float(extra[i]):.3g} on elements with "
                f"Z > {self.max_z}, which the model cannot represent"
            )
        edges = build_periodic_graph(batch, self.cutoff + self.skin)
        short = torch.nonzero(edges.distance <= self.threebody_cutoff + self.skin).view(-1)
        triples = ordered_pairs_by_center(edges.center, short)
        n_b = batch.n_crystals
        num_bonds = torch.bincount(edges.edge_crystal, minlength=n_b)
        num_triple_ij = torch.bincount(triples[:, 0], minlength=edges.n_edges)
        dev = self.device
        self._graph = _M3gGraph(
            edges=edges.to(dev, self.dtype),
            edge_index=torch.stack([edges.center, edges.neighbor]).to(dev),
            triples=triples.to(dev),
            num_bonds=num_bonds.to(dev),
            num_triple_ij=num_triple_ij.view(-1, 1).to(dev),
            crystal_index=batch.crystal_index.detach().to(dev),
            n_sites=batch.n_sites.detach().to(dev),
        )

    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        """Energy per atom (B,), eV/atom."""
        g, out_dtype, lattice, frac, probs = fixed_graph_inputs(self, batch, self.max_z)
        m = self.model
        n_total = probs.shape[0]
        n_b = g.n_sites.shape[0]

        # geometry, as M3Gnet.forward: vectors center - neighbour image
        edge_vector = -g.edges.edge_vectors(lattice, frac)
        edge_length = torch.linalg.norm(edge_vector, dim=1)
        vij, vik = edge_vector[g.triples[:, 0]], edge_vector[g.triples[:, 1]]
        rij, rik = edge_length[g.triples[:, 0]], edge_length[g.triples[:, 1]]
        cos_jik = torch.sum(vij * vik, dim=1) / (rij * rik)
        cos_jik = torch.clamp(cos_jik, min=-1.0 + 1e-7, max=1.0 - 1e-7)
        edge_length = edge_length.unsqueeze(-1)

        # soft one-hot over Z = 0..max_z (column 0, "Z = 0", is never occupied)
        soft_onehot = torch.cat([probs.new_zeros(n_total, 1), probs], dim=1)
        atom_attr = m.atom_embedding(soft_onehot)
        # M3GNet's smooth Bessel basis is zero (with two zero derivatives) at the cutoff but
        # oscillates beyond it; edges that stretched past the cutoff since the last refresh (or
        # lie in the skin) are switched off, so they contribute exactly nothing, smoothly
        inside = (edge_length.detach() < self.cutoff).to(self.dtype)
        edge_attr = m.rbf(edge_length.view(-1)) * inside
        edge_attr_zero = edge_attr
        edge_attr = m.edge_encoder(edge_attr)
        three_basis = m.sbf(rik.view(-1), torch.acos(cos_jik))
        for conv in m.graph_conv:
            atom_attr, edge_attr = conv(
                atom_attr,
                edge_attr,
                edge_attr_zero,
                g.edge_index,
                three_basis,
                g.triples,
                edge_length,
                g.num_bonds,
                g.num_triple_ij,
                g.n_sites,
                total_num_atoms=n_total,
                total_num_bonds=g.edges.n_edges,
                three_body_edge_map=g.triples[:, 0],
            )
        site_energy = m.final(atom_attr).view(-1)
        # per-element scale and shift, distribution-weighted (AtomScaling.transform)
        scale = soft_onehot @ m.normalizer.scale.to(self.dtype)
        shift = soft_onehot @ m.normalizer.shift.to(self.dtype)
        site_energy = scale * site_energy + shift
        energy = site_energy.new_zeros(n_b).index_add(0, g.crystal_index, site_energy)
        energy = energy / g.n_sites.to(self.dtype)
        return {"energy_per_atom": energy.to(out_dtype)}

    def to(self, device: str | torch.device) -> MatterSimPredictor:
        """Move the model to ``device`` (the graph is rebuilt there on next use)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self._graph = None
        return self


def build(
    device: str | torch.device = "cpu",
    model: Any = None,
    dtype: torch.dtype | str = torch.float32,
    skin: float = 0.0,
    download: bool = True,
    **kw: Any,
) -> MatterSimPredictor:
    """Build the soft-element MatterSim predictor (registry entry ``"mattersim"``).

    Args:
        device: torch device.
        model: a checkpoint path, a released name ("MatterSim-v1.0.0-1M" (default),
            "MatterSim-v1.0.0-5M") looked up in MatterSim's cache, or a loaded ``Potential``.
        dtype: compute dtype ("float32" or "float64").
        skin: graph skin in Å (see :class:`MatterSimPredictor`).
        download: allow MatterSim to download a released model missing from its cache.

    Raises:
        InputError: the weights are missing and cannot be downloaded, or the checkpoint is
            unreadable; the message says how to fix it (local path, or CHGNet).
    """
    if kw:
        raise SpecError(f"mattersim: unknown option(s) {sorted(kw)}")
    if isinstance(dtype, str):
        if dtype not in {"float32", "float64"}:
            raise SpecError(f"mattersim: dtype must be float32 or float64, not {dtype!r}")
        dtype = getattr(torch, dtype)
    potential = load_potential(model, device=device, download=download)
    return MatterSimPredictor(potential, device=device, dtype=dtype, skin=skin)
