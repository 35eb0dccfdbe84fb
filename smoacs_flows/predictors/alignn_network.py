"""The ALIGNN network: alignn's pure-torch ``ALIGNNAtomWisePure`` built from a checkpoint's
config, and its forward pass over a fixed
:class:`~smoacs_flows.predictors.alignn_graph.CrystalGraph` with bond vectors recomputed from
the (differentiable) lattice and fractional coordinates.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.alignn_graph import CrystalGraph

log = logging.getLogger(__name__)

#: alignn config model names whose state dicts map 1:1 onto ``ALIGNNAtomWisePure``
PURE_COMPATIBLE = ("alignn_atomwise_pure", "alignn_atomwise")

#: output heads a config may declare in its top-level ``output_head`` key -> network outputs.
#: ``identity`` (the default, alignn's own): the raw output. ``softplus``: softplus(raw), >= 0.
#: ``hurdle``: two outputs (metal/gapped logit l, raw gap g); sigmoid(k (l - b)) * softplus(g),
#: >= 0, with the gate sharpness k and offset b from the config's ``gate_sharpness`` (default 1)
#: and ``gate_bias`` (default 0).
OUTPUT_HEADS = {"identity": 1, "softplus": 1, "hurdle": 2}


def output_head(config: dict[str, Any]) -> str:
    """The output head declared by a checkpoint's config (``identity`` when absent)."""
    head = config.get("output_head", "identity")
    if head not in OUTPUT_HEADS:
        raise InputError(
            f"config.json: output_head {head!r} is not supported ({', '.join(OUTPUT_HEADS)})"
        )
    return str(head)


def gate_params(config: dict[str, Any]) -> tuple[float, float]:
    """The ``hurdle`` gate's (sharpness k, offset b) from a checkpoint's config ((1, 0) when
    absent)."""
    k, b = config.get("gate_sharpness", 1.0), config.get("gate_bias", 0.0)
    if isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k < 1e3:
        raise InputError(f"config.json: gate_sharpness must be a number in (0, 1000), got {k!r}")
    if isinstance(b, bool) or not isinstance(b, int | float) or not abs(b) < 1e3:
        raise InputError(f"config.json: gate_bias must be a number in (-1000, 1000), got {b!r}")
    return float(k), float(b)


def gate_override(gate: Any, head: str) -> tuple[float, float] | None:
    """A predictor spec's ``gate: {sharpness: k, bias: b}`` as (k, b); None keeps the model's.

    Only a ``hurdle`` model has a gate; both keys are required and bounded like the config's
    ``gate_sharpness`` / ``gate_bias``. Errors name the offending key.
    """
    if gate is None:
        return None
    if head != "hurdle":
        raise InputError(f"alignn predictor: gate needs a 'hurdle' model (this one is {head!r})")
    if not isinstance(gate, dict):
        raise InputError(f"alignn predictor: gate must be {{sharpness: k, bias: b}}, got {gate!r}")
    extra = sorted(set(gate) - {"sharpness", "bias"})
    if extra:
        raise InputError(f"alignn predictor: gate has unknown key(s) {extra} (sharpness, bias)")
    limits = {"sharpness": (0.0, 1e3), "bias": (-1e3, 1e3)}
    out = []
    for key, (lo, hi) in limits.items():
        if key not in gate:
            raise InputError(f"alignn predictor: gate.{key} is missing")
        v = gate[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo < v < hi:
            raise InputError(
                f"alignn predictor: gate.{key} must be a number in ({lo:g}, {hi:g}), got {v!r}"
            )
        out.append(float(v))
    return out[0], out[1]


def apply_head(
    head: str, raw: torch.Tensor, sharpness: float = 1.0, bias: float = 0.0
) -> torch.Tensor:
    """Per-crystal prediction (B,) from the network's raw output ((B,) or (B, 2))."""
    if head == "softplus":
        return torch.nn.functional.softplus(raw)
    if head == "hurdle":
        gate = torch.sigmoid(sharpness * (raw[:, 0] - bias))
        return gate * torch.nn.functional.softplus(raw[:, 1])
    return raw


def make_network(model_config: dict[str, Any], n_outputs: int = 1) -> torch.nn.Module:
    """An ``ALIGNNAtomWisePure`` network from the ``model`` section of an alignn config.

    ``n_outputs`` is what the config's output head needs (2 for ``hurdle``, else 1).
    """
    from alignn.models.alignn_atomwise_pure import ALIGNNAtomWisePure, ALIGNNAtomWisePureConfig

    cfg = dict(model_config)
    name = cfg.get("name", "alignn_atomwise_pure")
    if name == "alignn":
        return _legacy_network(cfg)
    if name not in PURE_COMPATIBLE:
        raise InputError(
            f"ALIGNN architecture {name!r} is not supported by the DGL-free predictor "
            f"(supported: {', '.join(PURE_COMPATIBLE)})"
        )
    cfg["name"] = "alignn_atomwise_pure"
    try:
        net = ALIGNNAtomWisePure(ALIGNNAtomWisePureConfig(**cfg))
    except Exception as exc:  # pydantic validation errors
        raise InputError(_config_error(name, exc)) from None
    conf = net.config
    if conf.classification or conf.output_features != n_outputs:
        raise InputError(
            f"only ALIGNN regressors with {n_outputs} output(s) fit this output head "
            f"(output_features={conf.output_features}, classification={conf.classification})"
        )
    if n_outputs != 1 and conf.link != "identity":
        raise InputError(f"a two-output head needs link 'identity' (got {conf.link!r})")
    if net.use_zbl and conf.calculate_gradient:
        log.warning(
            "ALIGNN checkpoint has a ZBL repulsion head; it only acts below %.2f Å and is "
            "omitted by the soft predictor",
            net.zbl_cutoff,
        )
    if conf.extra_features:
        raise InputError("ALIGNN models with extra_features are not supported")
    return net


def _config_error(name: str, exc: Exception) -> str:
    """One line naming the offending config fields of a pydantic validation error."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors()]
        detail = "; ".join(parts[:8]) + (f" (+{len(parts) - 8} more)" if len(parts) > 8 else "")
    else:
        detail = str(exc)
    return f"invalid ALIGNN model config for architecture {name!r}: {detail}"


def _legacy_network(cfg: dict[str, Any]) -> torch.nn.Module:
    """alignn's original (DGL) ``ALIGNN`` as an ``ALIGNNAtomWisePure`` with BatchNorm.

    The two forwards are the same computation except for the normalisation layers (BatchNorm1d
    in ``alignn.models.alignn``, LayerNorm in the pure model), so every LayerNorm is swapped for
    a BatchNorm1d of the same width; module names, hence state-dict keys, then coincide.
    """
    from alignn.models.alignn import ALIGNNConfig

    try:
        conf = ALIGNNConfig(**cfg)
    except Exception as exc:
        raise InputError(_config_error("alignn", exc)) from None
    if conf.classification or conf.output_features != 1 or conf.extra_features:
        raise InputError(
            "only single-output ALIGNN regressors without extra_features are supported"
        )
    fields = (
        "alignn_layers",
        "gcn_layers",
        "atom_input_features",
        "edge_input_features",
        "triplet_input_features",
        "embedding_features",
        "hidden_features",
        "output_features",
        "link",
    )
    pure = {f: getattr(conf, f) for f in fields}
    net = make_network(
        {
            **pure,
            "name": "alignn_atomwise_pure",
            "calculate_gradient": False,
            "gradwise_weight": 0.0,
            "use_zbl": False,
        }
    )
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.LayerNorm):
                setattr(module, child_name, torch.nn.BatchNorm1d(child.normalized_shape[0]))
    return net


def network_forward(
    net: torch.nn.Module,
    atom_feats: torch.Tensor,
    lattice: torch.Tensor,
    frac_coords: torch.Tensor,
    crystal_index: torch.Tensor,
    n_crystals: int,
    graph: CrystalGraph,
) -> torch.Tensor:
    """Per-crystal output (B,) (or (B, k) for k outputs) of an ``ALIGNNAtomWisePure`` over a
    fixed batched graph.

    Mirrors ``ALIGNNAtomWisePure.forward`` (the ``out`` head), with bond vectors recomputed
    from ``lattice`` and ``frac_coords`` so gradients reach both.
    """
    from alignn.models.alignn_atomwise_pure import (
        EdgeGatedGraphConvPure,
        _bond_cosines,
        cutoff_function_based_edges,
        scatter_mean,
    )
    from alignn.torch_graph_builder import TorchGraph

    conf = net.config
    cart = torch.einsum("ni,nij->nj", frac_coords, lattice[crystal_index])
    r = (
        cart[graph.dst]
        - cart[graph.src]
        + torch.einsum("ei,eij->ej", graph.shift, lattice[graph.edge_crystal])
    )
    bondlength = torch.norm(r, dim=1)
    n_nodes = int(atom_feats.shape[0])
    n_edges = int(r.shape[0])

    x = net.atom_embedding(atom_feats)
    if conf.use_cutoff_function:
        c_off = cutoff_function_based_edges(
            bondlength, inner_cutoff=conf.inner_cutoff, exponent=conf.exponent
        )
        if conf.multiply_cutoff:
            y = net.edge_embedding(bondlength) * c_off.unsqueeze(-1)
        else:
            y = net.edge_embedding(c_off)
    else:
        y = net.edge_embedding(bondlength)

    plain = all(
        isinstance(layer.node_update, EdgeGatedGraphConvPure) for layer in net.alignn_layers
    ) and all(isinstance(layer, EdgeGatedGraphConvPure) for layer in net.gcn_layers)
    if len(net.alignn_layers) > 0:
        z = net.angle_embedding(_bond_cosines(r[graph.lg_src], r[graph.lg_dst]))
    if plain:
        for layer in net.alignn_layers:
            x, y, z = layer.forward_tensors(
                graph.src, graph.dst, n_nodes, graph.lg_src, graph.lg_dst, n_edges, x, y, z
            )
        for layer in net.gcn_layers:
            x, y = layer.forward_tensors(graph.src, graph.dst, n_nodes, x, y)
    else:  # attention variants only have the graph-object forward
        g = TorchGraph(num_nodes=n_nodes, src=graph.src, dst=graph.dst)
        lg = TorchGraph(num_nodes=n_edges, src=graph.lg_src, dst=graph.lg_dst)
        for layer in net.alignn_layers:
            x, y, z = layer(g, lg, x, y, z)
        for layer in net.gcn_layers:
            x, y = layer(g, x, y)

    h = scatter_mean(x, crystal_index, n_crystals)
    out = net.fc(h)
    out = out.squeeze(-1) if out.shape[-1] == 1 else out
    if net.link_name == "log":
        out = torch.exp(out)
    elif net.link_name == "logit":
        out = torch.sigmoid(out)
    return out
