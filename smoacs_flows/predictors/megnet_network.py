"""MEGNet's network in plain torch (no DGL), with matgl's state-dict layout.

A re-implementation of ``matgl.models.MEGNet`` (matgl 1.x, BSD-3-Clause) for the forward pass
only: the same modules under the same names, so matgl's published ``state.pt`` (keys
``model.<module>...``) loads with ``strict=True`` once the ``model.`` prefix is dropped.

Differences from matgl, all of them inputs, none of them arithmetic:

* node features are ``element_probs (N, n_elements) @ embedding table`` (a one-hot row gives
  exactly matgl's ``nn.Embedding`` lookup), so soft element distributions are differentiable;
* the graph is given as index tensors (``src``, ``dst``, ``edge_crystal``, ``crystal_index``)
  of a batch of crystals; DGL's per-graph ``mean`` readouts, ``update_all(copy_e, mean)`` and
  ``Set2Set`` softmaxes become segment reductions over those indices;
* the band-gap model's fidelity (an ``nn.Embedding`` index in matgl) may also be given as a
  probability vector over fidelities (weights @ state embedding table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class SoftPlus2(nn.Module):
    """matgl's ``softplus2``: ``softplus(x) - log 2`` (zero at zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation."""
        return nn.functional.softplus(x) - math.log(2.0)


class MLP(nn.Module):
    """matgl's ``MLP``: Linear layers with the activation between them (and after the last
    one when ``activate_last``); activations sit in ``layers`` so the state-dict indices of
    the Linear layers are matgl's (0, 2, 4 ...)."""

    def __init__(self, dims: Sequence[int], activate_last: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        n = len(dims) - 1
        for i in range(n):
            self.layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n - 1 or activate_last:
                self.layers.append(SoftPlus2())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each layer in turn."""
        for layer in self.layers:
            x = layer(x)
        return x


def segment_mean(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` rows per segment ``index`` (n segments; an empty one gives 0, as
    DGL's mean reducers do)."""
    total = values.new_zeros((n, values.shape[1])).index_add(0, index, values)
    count = torch.bincount(index, minlength=n).clamp(min=1).to(values.dtype)
    return total / count.unsqueeze(1)


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``scores`` (M,) within each segment of ``index`` (DGL's softmax_nodes/edges)."""
    top = scores.new_full((n,), -torch.inf).scatter_reduce(
        0, index, scores.detach(), reduce="amax", include_self=True
    )
    z = torch.exp(scores - top[index])
    den = z.new_zeros(n).index_add(0, index, z)
    return z / den[index]


class Set2Set(nn.Module):
    """DGL's ``Set2Set`` (and matgl's ``EdgeSet2Set``) over segments of a batch."""

    def __init__(self, input_dim: int, n_iters: int, n_layers: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.n_iters = n_iters
        self.n_layers = n_layers
        self.lstm = nn.LSTM(2 * input_dim, input_dim, n_layers)

    def forward(self, feat: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """Readout (n, 2 * input_dim) of ``feat`` rows grouped by ``index``."""
        shape = (self.n_layers, n, self.input_dim)
        h = (feat.new_zeros(shape), feat.new_zeros(shape))
        q_star = feat.new_zeros((n, 2 * self.input_dim))
        for _ in range(self.n_iters):
            q, h = self.lstm(q_star.unsqueeze(0), h)
            q = q.view(n, self.input_dim)
            e = (feat * q[index]).sum(dim=-1)
            alpha = segment_softmax(e, index, n)
            readout = feat.new_zeros((n, self.input_dim)).index_add(
                0, index, feat * alpha.unsqueeze(1)
            )
            q_star = torch.cat([q, readout], dim=-1)
        return q_star


class GaussianExpansion(nn.Module):
    """matgl's Gaussian radial basis: ``exp(-width (d - c_k)^2)``."""

    def __init__(self, initial: float, final: float, num_centers: int, width: float) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(initial, final, num_centers))
        self.width = float(width)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """Expand distances (E,) to (E, num_centers)."""
        return torch.exp(-self.width * (d.unsqueeze(1) - self.centers.unsqueeze(0)) ** 2)


class _BondExpansion(nn.Module):
    """Holder for matgl's ``bond_expansion.rbf`` key path."""

    def __init__(self, rbf: GaussianExpansion) -> None:
        super().__init__()
        self.rbf = rbf


class _Embedding(nn.Module):
    """matgl's ``EmbeddingBlock`` as MEGNet uses it: element table and optional state table."""

    def __init__(self, n_elements: int, dim_node: int, ntypes_state: int | None, dim_state: int):
        super().__init__()
        self.layer_node_embedding = nn.Embedding(n_elements, dim_node)
        if ntypes_state:
            self.layer_state_embedding = nn.Embedding(ntypes_state, dim_state)


class GraphConv(nn.Module):
    """``MEGNetGraphConv``: edge, then node, then state update."""

    def __init__(self, edge_in: int, node_in: int, state_in: int, hiddens: Sequence[int]):
        super().__init__()
        self.edge_func = MLP([edge_in, *hiddens], activate_last=True)
        self.node_func = MLP([node_in, *hiddens], activate_last=True)
        self.state_func = MLP([state_in, *hiddens], activate_last=True)

    def forward(self, g: dict[str, Any], e: torch.Tensor, v: torch.Tensor, u: torch.Tensor):
        """Updated (edge, node, state) features."""
        src, dst, ec, ci, nb = g["src"], g["dst"], g["edge_crystal"], g["crystal_index"], g["n"]
        e = self.edge_func(torch.cat([v[src], v[dst], e, u[ec]], dim=1))
        ve = segment_mean(e, dst, v.shape[0])  # incoming edges, DGL update_all(copy_e, mean)
        v = self.node_func(torch.cat([v, ve, u[ci]], dim=1))
        u = self.state_func(torch.cat([u, segment_mean(e, ec, nb), segment_mean(v, ci, nb)], 1))
        return e, v, u


class Block(nn.Module):
    """``MEGNetBlock``: optional dense pre-layers, a graph convolution, a residual skip."""

    def __init__(self, dims: Sequence[int], conv_hiddens: Sequence[int]) -> None:
        super().__init__()
        self.has_dense = len(dims) > 1
        if self.has_dense:
            self.edge_func = MLP(dims, activate_last=True)
            self.node_func = MLP(dims, activate_last=True)
            self.state_func = MLP(dims, activate_last=True)
        c, o = dims[-1], conv_hiddens[-1]
        self.conv = GraphConv(4 * c, o + 2 * c, 2 * o + c, conv_hiddens)

    def forward(self, g: dict[str, Any], e: torch.Tensor, v: torch.Tensor, u: torch.Tensor):
        """Updated (edge, node, state) features."""
        e0, v0, u0 = e, v, u
        if self.has_dense:
            e, v, u = self.edge_func(e), self.node_func(v), self.state_func(u)
        e, v, u = self.conv(g, e, v, u)
        return e + e0, v + v0, u + u0


class MegnetNetwork(nn.Module):
    """MEGNet from matgl's ``init_args`` (``model.json``); forward as ``MEGNet.forward``."""

    def __init__(self, args: dict[str, Any], n_elements: int) -> None:
        super().__init__()
        if args.get("is_classification") or not args.get("include_state", True):
            raise ValueError("only MEGNet regressors with a state (include_state) are supported")
        d_node, d_edge = int(args["dim_node_embedding"]), int(args["dim_edge_embedding"])
        d_state = int(args["dim_state_embedding"])
        self.ntypes_state = args.get("ntypes_state")
        self.dim_state = d_state
        h_in = list(args["hidden_layer_sizes_input"])
        h_conv = list(args["hidden_layer_sizes_conv"])
        h_out = list(args["hidden_layer_sizes_output"])
        self.cutoff = float(args["cutoff"])
        self.bond_expansion = _BondExpansion(
            GaussianExpansion(0.0, self.cutoff + 1.0, d_edge, float(args["gauss_width"]))
        )
        self.embedding = _Embedding(n_elements, d_node, self.ntypes_state, d_state)
        self.edge_encoder = MLP([d_edge, *h_in], activate_last=True)
        self.node_encoder = MLP([d_node, *h_in], activate_last=True)
        self.state_encoder = MLP([d_state, *h_in], activate_last=True)
        n_blocks = int(args["nblocks"])
        # the first block has no dense pre-layers, the others map conv output back to h_in
        self.blocks = nn.ModuleList(
            [Block([h_in[-1]], h_conv)]
            + [Block([h_conv[-1], *h_in], h_conv) for _ in range(n_blocks - 1)]
        )
        d_out = h_conv[-1]
        s2s = (int(args["niters_set2set"]), int(args["nlayers_set2set"]))
        self.edge_s2s = Set2Set(d_out, *s2s)
        self.node_s2s = Set2Set(d_out, *s2s)
        self.output_proj = MLP([5 * d_out, *h_out, 1], activate_last=False)

    def state_input(self, n: int, fidelity: torch.Tensor | None, like: torch.Tensor):
        """Per-crystal state features (n, dim_state) before the state encoder.

        Models with a state table (multi-fidelity) look up ``fidelity``: a long tensor (n,)
        or probabilities (n, ntypes_state). Models without one get matgl's default state
        attribute, zeros.
        """
        if not self.ntypes_state:
            return like.new_zeros((n, self.dim_state))
        table = self.embedding.layer_state_embedding.weight.to(like.dtype)
        if fidelity is None:
            raise ValueError("this model needs a fidelity")
        if fidelity.dtype in (torch.int64, torch.int32):
            return table[fidelity.expand(n)]
        return fidelity.to(like.dtype).expand(n, -1) @ table

    def forward(
        self,
        node_probs: torch.Tensor,
        distances: torch.Tensor,
        graph: dict[str, Any],
        fidelity: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised per-crystal output (B,) (before the target transformer).

        ``node_probs`` (N, n_elements), ``distances`` (E,), and ``graph`` with ``src``,
        ``dst`` (E,), ``edge_crystal`` (E,), ``crystal_index`` (N,) and ``n`` (crystals).
        """
        nb = graph["n"]
        table = self.embedding.layer_node_embedding.weight.to(node_probs.dtype)
        v = self.node_encoder(node_probs @ table)
        e = self.edge_encoder(self.bond_expansion.rbf(distances))
        u = self.state_encoder(self.state_input(nb, fidelity, node_probs))
        for block in self.blocks:
            e, v, u = block(graph, e, v, u)
        node_vec = self.node_s2s(v, graph["crystal_index"], nb)
        edge_vec = self.edge_s2s(e, graph["edge_crystal"], nb)
        return self.output_proj(torch.cat([node_vec, edge_vec, u], dim=1)).view(nb)
