"""Soft-element CHGNet: energy per atom and magnetic moments, differentiable end to end.

The pretrained CHGNet (weights ship in the chgnet wheel) is evaluated on *soft* crystals:

* the atom embedding of a site is ``element_probs @ embedding.weight`` (the distribution-weighted
  average of CHGNet's per-element embedding rows, Z = 1..94); the composition model (AtomRef) is
  averaged the same way;
* the atom graph (pairs within ``atom_graph_cutoff``, 6 Å for CHGNet 0.3.0) and the bond graph
  (angles between bonds shorter than ``bond_graph_cutoff``, 3 Å) are built at :meth:`refresh`
  from the detached geometry; between refreshes bond vectors, lengths and angles are recomputed
  differentiably from the lattice and fractional coordinates over that fixed edge list;
* CHGNet's own modules (basis expansions, AtomConv/BondConv/AngleUpdate, read-out MLP,
  site-wise magmom head) are called with its pretrained weights, mirroring ``CHGNet._compute``.

With one-hot distributions the result equals ``CHGNet.predict_structure`` (tested).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any

import torch

from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.predictors._graph import (
    PeriodicGraph,
    build_periodic_graph,
    fixed_graph_inputs,
    ordered_pairs_by_center,
    reverse_edges,
)
from smoacs_flows.predictors.base import N_ELEMENTS, Predictor, SoftCrystalBatch

#: largest atomic number CHGNet embeds
CHGNET_MAX_Z = 94
#: probability mass on Z > 94 tolerated before refresh complains
_UNSUPPORTED_MASS_TOL = 1e-6


@dataclass
class _ChgnetGraph:
    """CHGNet's atom graph and bond graph for one batch topology (all on the model device)."""

    edges: PeriodicGraph
    atom_graph: torch.Tensor  # (E, 2) center, neighbour (directed edges)
    directed2undirected: torch.Tensor  # (E,)
    undirected2directed: torch.Tensor  # (U,)
    bond_graph: torch.Tensor  # (A, 3) center atom, undirected bond 1, undirected bond 2
    angle_edges: torch.Tensor  # (A, 2) directed edges spanning each angle
    crystal_index: torch.Tensor  # (N,)
    n_sites: torch.Tensor  # (B,)


class ChgnetPredictor(Predictor):
    """CHGNet over soft crystals: ``energy_per_atom``, ``site_magmoms``, ``magmom_abs_total``.

    CHGNet predicts moment *magnitudes* |m_i| (its magmom head is trained on absolute site
    moments), so its per-cell total is Σ|m_i| — ``magmom_abs_total``, never a net moment: an
    antiferromagnet and a ferromagnet with the same site moments get the same value.
    """

    name = "chgnet"
    properties = {
        "energy_per_atom": "eV/atom",
        "site_magmoms": "μB",
        "magmom_abs_total": "μB",
        "energy_above_atomref": "eV/atom",
    }
    supported_z = frozenset(range(1, CHGNET_MAX_Z + 1))
    needs_graph_refresh = True

    def __init__(
        self,
        model: Any,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        skin: float = 0.0,
    ) -> None:
        """Wrap a loaded ``chgnet.model.CHGNet``.

        Args:
            model: the CHGNet module (its parameters are frozen here).
            device: where the model and graphs live.
            dtype: compute dtype (float32 as CHGNet ships; float64 for finite-difference checks).
            skin: extra Å added to both cutoffs when the graph is built. Edges in the skin
                contribute exactly zero (CHGNet's smooth cutoffs vanish there) until atoms move
                inside the cutoff, so a skin lets the fixed graph catch neighbours that approach
                between refreshes, at the cost of more edges and angles.
        """
        if not getattr(model, "mlp_first", True) and model.read_out_type != "ave":
            raise SpecError("chgnet: only 'mlp_first' or 'ave' read-out models are supported")
        if skin < 0:
            raise SpecError(f"chgnet: skin must be >= 0 Å, got {skin}")
        self.model = model.to(device=device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        self.skin = float(skin)
        conv = model.graph_converter
        self.atom_cutoff = float(conv.atom_graph_cutoff)
        self.bond_cutoff = float(conv.bond_graph_cutoff)
        self._graph: _ChgnetGraph | None = None

    # ------------------------------------------------------------------ graph
    def refresh(self, batch: SoftCrystalBatch) -> None:
        """Rebuild the atom and bond graphs from the batch's current (detached) geometry."""
        _check_supported(batch.element_probs)
        edges = build_periodic_graph(batch, self.atom_cutoff + self.skin)
        n_edges = edges.n_edges
        eid = torch.arange(n_edges)
        rev = reverse_edges(edges)
        # an undirected bond is represented by the smaller of its two directed edge ids
        rep = torch.minimum(eid, rev)
        undirected2directed, directed2undirected = torch.unique(rep, return_inverse=True)
        short = torch.nonzero(edges.distance < self.bond_cutoff + self.skin).view(-1)
        pairs = ordered_pairs_by_center(edges.center, short)
        bond_graph = torch.stack(
            [
                edges.center[pairs[:, 0]],
                directed2undirected[pairs[:, 0]],
                directed2undirected[pairs[:, 1]],
            ],
            dim=1,
        )
        dev = self.device
        self._graph = _ChgnetGraph(
            edges=edges.to(dev, self.dtype),
            atom_graph=torch.stack([edges.center, edges.neighbor], dim=1).to(dev),
            directed2undirected=directed2undirected.to(dev),
            undirected2directed=undirected2directed.to(dev),
            bond_graph=bond_graph.to(dev),
            angle_edges=pairs.to(dev),
            crystal_index=batch.crystal_index.detach().to(dev),
            n_sites=batch.n_sites.detach().to(dev),
        )

    def graph_sizes(self) -> dict[str, int]:
        """Sizes of the current graph (directed edges, undirected bonds, angles); {} if none."""
        g = self._graph
        if g is None:
            return {}
        return {
            "directed_edges": g.edges.n_edges,
            "bonds": int(g.undirected2directed.shape[0]),
            "angles": int(g.bond_graph.shape[0]),
        }

    # ---------------------------------------------------------------- predict
    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        """Energy per atom (B,), site magnetic moments (N,) and total moment per cell (B,)."""
        g, out_dtype, lattice, frac, probs = fixed_graph_inputs(self, batch, CHGNET_MAX_Z)
        m = self.model
        n_sites = g.n_sites
        n_total = probs.shape[0]

        # bonds: CHGNet's convention is center - neighbour image
        bond_vec = -g.edges.edge_vectors(lattice, frac)
        bond_len = torch.linalg.norm(bond_vec, dim=1)
        bond_unit = bond_vec / bond_len[:, None]
        und_len = bond_len[g.undirected2directed]
        bases_ag = m.bond_basis_expansion.rbf_expansion_ag(und_len)
        bases_bg = m.bond_basis_expansion.rbf_expansion_bg(und_len)
        n_angles = g.bond_graph.shape[0]

        # embeddings: soft atoms = distribution-weighted embedding rows
        atom_feas = probs @ m.atom_embedding.embedding.weight
        bond_feas = m.bond_embedding(bases_ag)
        bond_weights_ag = m.bond_weights_ag(bases_ag)
        bond_weights_bg = m.bond_weights_bg(bases_bg)
        angle_feas = None
        if n_angles:
            angle_bases = m.angle_basis_expansion(
                bond_unit[g.angle_edges[:, 0]], bond_unit[g.angle_edges[:, 1]]
            )
            angle_feas = m.angle_embedding(angle_bases)

        # message passing, as CHGNet._compute
        site_magmoms = None
        for idx, (atom_layer, bond_layer, angle_layer) in enumerate(
            zip(m.atom_conv_layers[:-1], m.bond_conv_layers, m.angle_layers)
        ):
            atom_feas = atom_layer(
                atom_feas=atom_feas,
                bond_feas=bond_feas,
                bond_weights=bond_weights_ag,
                atom_graph=g.atom_graph,
                directed2undirected=g.directed2undirected,
            )
            if n_angles and bond_layer is not None:
                bond_feas = bond_layer(
                    atom_feas=atom_feas,
                    bond_feas=bond_feas,
                    bond_weights=bond_weights_bg,
                    angle_feas=angle_feas,
                    bond_graph=g.bond_graph,
                )
                if angle_layer is not None:
                    angle_feas = angle_layer(
                        atom_feas=atom_feas,
                        bond_feas=bond_feas,
                        angle_feas=angle_feas,
                        bond_graph=g.bond_graph,
                    )
            if idx == m.n_conv - 2:
                site_magmoms = torch.abs(m.site_wise(atom_feas)).view(-1)
        atom_feas = m.atom_conv_layers[-1](
            atom_feas=atom_feas,
            bond_feas=bond_feas,
            bond_weights=bond_weights_ag,
            atom_graph=g.atom_graph,
            directed2undirected=g.directed2undirected,
        )
        if m.readout_norm is not None:
            atom_feas = m.readout_norm(atom_feas)

        n_b = n_sites.shape[0]
        counts = n_sites.to(self.dtype)
        if m.mlp_first:
            site_energy = m.mlp(atom_feas).view(-1)
            energy = _segment_sum(site_energy, g.crystal_index, n_b)
        else:
            crystal_feas = _segment_sum(atom_feas, g.crystal_index, n_b) / counts[:, None]
            energy = m.mlp(crystal_feas).view(-1) * counts
        if m.is_intensive:
            energy = energy / counts
        above_ref = energy if m.is_intensive else energy / counts
        if m.composition_model is not None:
            # AtomRef: linear in the (intensive) composition -> distribution-weighted
            site_ref = probs @ m.composition_model.fc.weight.view(-1)
            ref = _segment_sum(site_ref, g.crystal_index, n_b)
            energy = energy + (ref / counts if m.composition_model.is_intensive else ref)
        if site_magmoms is None:  # n_conv == 1: CHGNet never computes moments
            site_magmoms = atom_feas.new_zeros(n_total)
        magmom_abs_total = _segment_sum(site_magmoms, g.crystal_index, n_b)  # Σ|m_i|
        return {
            "energy_per_atom": energy.to(out_dtype),
            "site_magmoms": site_magmoms.to(out_dtype),
            "magmom_abs_total": magmom_abs_total.to(out_dtype),
            # energy relative to CHGNet's fitted per-element references (AtomRef), eV/atom:
            # a formation-energy-like objective that does not favour heavy elements
            "energy_above_atomref": above_ref.to(out_dtype),
        }

    def to(self, device: str | torch.device) -> ChgnetPredictor:
        """Move the model (and the current graph) to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self._graph = None  # rebuilt on the new device at the next predict/refresh
        return self


def _segment_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Sum rows of ``values`` into ``n`` segments given by ``index``."""
    out = values.new_zeros((n, *values.shape[1:]))
    return out.index_add(0, index, values)


def _check_supported(element_probs: torch.Tensor) -> None:
    """Raise InputError when a site puts probability on elements CHGNet cannot embed."""
    if element_probs.shape[-1] != N_ELEMENTS:
        raise InputError(
            f"chgnet: element_probs must have {N_ELEMENTS} columns, got {element_probs.shape[-1]}"
        )
    extra = element_probs.detach()[:, CHGNET_MAX_Z:].sum(dim=1)
    bad = torch.nonzero(extra > _UNSUPPORTED_MASS_TOL).view(-1)
    if bad.numel():
        i = int(bad[0])
        raise InputError(
            f"chgnet: site {i} puts probability {float(extra[i]):.3g} on elements with "
            f"Z > {CHGNET_MAX_Z}, which CHGNet cannot represent; exclude Z 95-98 "
            "(ChgnetPredictor.supported_z)"
        )


def load_chgnet(model: Any = None, device: str | torch.device = "cpu") -> Any:
    """Load a CHGNet: None -> the pretrained 0.3.0 weights shipped in the chgnet wheel; a
    version name ("0.3.0", "0.2.0", "r2scan"); a checkpoint path; or an already built CHGNet.
    """
    from chgnet.model import CHGNet

    if model is None or isinstance(model, str) and model in {"0.3.0", "0.2.0", "r2scan"}:
        # CHGNet prints its parameter count on construction; keep our CLI output clean
        with contextlib.redirect_stdout(io.StringIO()):
            return CHGNet.load(model_name=model or "0.3.0", use_device=str(device), verbose=False)
    if isinstance(model, CHGNet):
        return model
    if isinstance(model, str | os.PathLike):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise InputError(
                f"chgnet: model {path!r} is neither a known version (0.3.0, 0.2.0, r2scan) "
                "nor an existing checkpoint file"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            with contextlib.redirect_stdout(io.StringIO()):
                return CHGNet.from_dict(state.get("model", state))
        except Exception as exc:  # unreadable / wrong layout
            raise InputError(f"chgnet: cannot load checkpoint {path!r}: {exc}") from exc
    raise SpecError(f"chgnet: model must be None, a version name or a path, not {model!r}")


def build(
    device: str | torch.device = "cpu",
    model: Any = None,
    dtype: torch.dtype | str = torch.float32,
    skin: float = 0.0,
    **kw: Any,
) -> ChgnetPredictor:
    """Build the soft-element CHGNet predictor (registry entry ``"chgnet"``).

    Args:
        device: torch device.
        model: None (pretrained 0.3.0 from the wheel, offline), a version name, a checkpoint
            path, or a ``CHGNet`` instance.
        dtype: compute dtype, torch dtype or "float32"/"float64".
        skin: graph skin in Å (see :class:`ChgnetPredictor`).
    """
    if kw:
        raise SpecError(f"chgnet: unknown option(s) {sorted(kw)}")
    if isinstance(dtype, str):
        if dtype not in {"float32", "float64"}:
            raise SpecError(f"chgnet: dtype must be float32 or float64, not {dtype!r}")
        dtype = getattr(torch, dtype)
    return ChgnetPredictor(load_chgnet(model, device), device=device, dtype=dtype, skin=skin)
