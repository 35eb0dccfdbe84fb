"""Differentiable ALIGNN over soft crystals, without DGL.

The network is alignn's own pure-torch ``ALIGNNAtomWisePure`` (same modules, same state-dict
keys as alignn's ``alignn_atomwise`` checkpoints); this module only replaces its input stage so
that SMOACS can backpropagate through it:

* atom features = ``element_probs (N, 98) @ CGCNN table (98, 92)`` (rows Z = 1..98, the
  92-dimensional CGCNN features alignn uses), so a one-hot distribution gives exactly the
  features alignn's graph builder would look up;
* the neighbour graph (radius ``cutoff``, optional ``max_neighbors``) and its line graph (edges
  no longer than ``three_body_cutoff``) are built from the detached geometry in ``refresh`` and
  kept fixed in between; bond vectors ``r = x_dst - x_src + shift @ L``, bond lengths and
  bond-angle cosines are recomputed differentiably from ``lattice`` and ``frac_coords`` on every
  call;
* crystals of different sizes are batched by offsetting node and edge indices; the readout is a
  per-crystal mean.

Checkpoints use alignn's layout: a directory or a zip with ``config.json`` (alignn training
config: ``cutoff``, ``max_neighbors``, ``model`` ...) and ``best_model.pt`` (a state dict), plus
this project's ``model_card.json`` when written by ``smoacs-flows train``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.base import N_ELEMENTS, Predictor, SoftCrystalBatch

log = logging.getLogger(__name__)

#: checkpoint files inside a model directory or zip
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "best_model.pt"
CARD_FILE = "model_card.json"

#: models that ship with the package
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"

#: alignn config model names whose state dicts map 1:1 onto ``ALIGNNAtomWisePure``
PURE_COMPATIBLE = ("alignn_atomwise_pure", "alignn_atomwise")
#: graph strategies of alignn's config that this module reproduces
GRAPH_STRATEGIES = ("pure_torch", "k-nearest")

#: alignn target names -> (standard property name, units)
TARGET_PROPERTIES: dict[str, tuple[str, str]] = {
    "formation_energy_peratom": ("formation_energy_per_atom", "eV/atom"),
    "formation_energy_per_atom": ("formation_energy_per_atom", "eV/atom"),
    "e_form": ("formation_energy_per_atom", "eV/atom"),
    "heat_ref": ("formation_energy_per_atom", "eV/atom"),
    "optb88vdw_bandgap": ("band_gap", "eV"),
    "mbj_bandgap": ("band_gap", "eV"),
    "gappbe": ("band_gap", "eV"),
    "band_gap": ("band_gap", "eV"),
    "dir_gap": ("band_gap", "eV"),
    "magmom_oszicar": ("magmom_total", "μB"),
    "magmom_outcar": ("magmom_total", "μB"),
}


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


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def make_network(model_config: dict[str, Any]) -> torch.nn.Module:
    """An ``ALIGNNAtomWisePure`` network from the ``model`` section of an alignn config."""
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
    if conf.classification or conf.output_features != 1:
        raise InputError(
            "only single-output ALIGNN regressors are supported "
            f"(output_features={conf.output_features}, classification={conf.classification})"
        )
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
    """Per-crystal output (B,) of an ``ALIGNNAtomWisePure`` over a fixed batched graph.

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
    out = net.fc(h).squeeze(-1)
    if net.link_name == "log":
        out = torch.exp(out)
    elif net.link_name == "logit":
        out = torch.sigmoid(out)
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: the alignn config, the state dict, and the model card (if any)."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    card: dict[str, Any]
    source: str


def _read_member(zf: zipfile.ZipFile, names: list[str], suffix: str) -> bytes | None:
    hits = [n for n in names if n == suffix or n.endswith("/" + suffix)]
    return zf.read(hits[0]) if hits else None


def _epoch(name: str) -> int:
    digits = "".join(c for c in name.rsplit("checkpoint_", 1)[-1] if c.isdigit())
    return int(digits) if digits else -1


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``config.json`` + weights (+ ``model_card.json``) from a directory or a zip.

    Weights are ``best_model.pt`` or, failing that, the last ``checkpoint_*.pt`` (alignn's
    layouts); they are loaded with ``weights_only=True``.
    """
    path = Path(path)
    if path.is_dir():
        cfg_p, wts_p, card_p = path / CONFIG_FILE, path / WEIGHTS_FILE, path / CARD_FILE
        if not wts_p.is_file():
            chks = sorted(path.glob("checkpoint_*.pt"), key=lambda p: _epoch(p.name))
            wts_p = chks[-1] if chks else wts_p
        missing = [p.name for p in (cfg_p, wts_p) if not p.is_file()]
        if missing:
            raise InputError(f"{path}: not an ALIGNN checkpoint directory (missing {missing})")
        cfg_b, wts_b = cfg_p.read_bytes(), wts_p.read_bytes()
        card_b = card_p.read_bytes() if card_p.is_file() else None
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            cfg_b = _read_member(zf, names, CONFIG_FILE)
            wts_b = _read_member(zf, names, WEIGHTS_FILE)
            if wts_b is None:
                chks = sorted(
                    (n for n in names if "checkpoint_" in n and n.endswith(".pt")), key=_epoch
                )
                wts_b = zf.read(chks[-1]) if chks else None
            card_b = _read_member(zf, names, CARD_FILE)
        if cfg_b is None or wts_b is None:
            raise InputError(f"{path}: zip has no {CONFIG_FILE} and {WEIGHTS_FILE}")
    else:
        raise InputError(f"{path}: no such checkpoint directory or zip")
    try:
        config = json.loads(cfg_b)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: {CONFIG_FILE} is not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise InputError(f"{path}: {CONFIG_FILE} has no 'model' section")
    try:
        state = torch.load(io.BytesIO(wts_b), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    card = json.loads(card_b) if card_b else {}
    return Checkpoint(config=config, state=state, card=card, source=str(path))


#: buffers a checkpoint may omit (filled in by the constructor, not learned)
_OPTIONAL_KEYS = ("_species_table",)


def map_state_dict(state: Any, net: torch.nn.Module, source: str = "checkpoint") -> dict:
    """Map checkpoint keys onto ``net``'s keys; raise ``InputError`` on any mismatch.

    Accepted, explicitly: a plain state dict, alignn's ``{"model": state_dict, ...}`` training
    checkpoints, and keys prefixed by ``module.`` (DataParallel/DDP). Everything else must match
    ``net.state_dict()`` key for key and shape for shape.
    """
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{source}: weights are not a state dict of tensors")
    mapped = {}
    for key, value in state.items():
        new = key[len("module.") :] if key.startswith("module.") else key
        mapped[new] = value
    expected = net.state_dict()
    missing = sorted(k for k in expected if k not in mapped and not k.endswith(_OPTIONAL_KEYS))
    unexpected = sorted(k for k in mapped if k not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise InputError(
            f"{source}: weights do not match the ALIGNN architecture in config.json: "
            + "; ".join(parts)
        )
    bad = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise InputError(f"{source}: weight shapes differ from config.json: {_few(bad)}")
    for k in expected:
        if k not in mapped:
            mapped[k] = expected[k]
    return mapped


def _few(items: list[str], n: int = 8) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --------------------------------------------------------------------------------------------
# Model resolution (shipped, cached, downloaded)
# --------------------------------------------------------------------------------------------


def model_cache_dirs() -> list[Path]:
    """Directories searched for cached models by name (this project's, then alignn's)."""
    from smoacs_flows.config import smoacs_home

    return [smoacs_home() / "models", Path.home() / ".alignn2_models"]


def shipped_models() -> list[str]:
    """Names of the models that ship with the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model(model: str | Path, download: bool = True) -> Path:
    """A local checkpoint path for a shipped/cached model name, a path, or an ALIGNN2 name.

    Names of alignn's pretrained registry (``alignn.pretrained.ALIGNN2_MODELS``) are fetched
    through alignn's own helper into ``~/.alignn2_models/<name>``; without a network this
    raises an ``InputError`` that says what to do instead.
    """
    p = Path(model)
    if p.exists():
        return p
    name = str(model)
    if (SHIPPED_DIR / name / CONFIG_FILE).is_file():
        return SHIPPED_DIR / name
    for d in model_cache_dirs():
        if (d / name / CONFIG_FILE).is_file() and (d / name / WEIGHTS_FILE).is_file():
            return d / name
    try:
        from alignn.pretrained import ALIGNN2_MODELS, get_alignn2_model
    except ImportError:  # pragma: no cover - alignn is a hard dependency
        ALIGNN2_MODELS, get_alignn2_model = {}, None
    if name in ALIGNN2_MODELS and download and get_alignn2_model is not None:
        try:
            files = get_alignn2_model(name, download=True)
        except Exception as exc:
            # alignn creates the cache folder before downloading; drop it if empty
            with contextlib.suppress(OSError):
                (Path.home() / ".alignn2_models" / name).rmdir()
            raise InputError(
                f"ALIGNN model {name!r} is not cached and could not be downloaded "
                f"({type(exc).__name__}); download it where the network allows and pass the "
                f"directory/zip path, or use a shipped model ({', '.join(shipped_models())})"
            ) from None
        if CONFIG_FILE in files and WEIGHTS_FILE in files:
            return Path(files[CONFIG_FILE]).parent
    raise InputError(
        f"unknown ALIGNN model {name!r}: not a path, a shipped model "
        f"({', '.join(shipped_models()) or 'none'}), a cached model, or an alignn pretrained name"
    )


def property_of(config: dict[str, Any], card: dict[str, Any]) -> tuple[str, str]:
    """(property name, units) from the model card, else from the alignn target name."""
    if card.get("property"):
        return str(card["property"]), str(card.get("units", ""))
    target = str(config.get("target", ""))
    if target in TARGET_PROPERTIES:
        return TARGET_PROPERTIES[target]
    try:
        from alignn.pretrained import ALIGNN2_MODELS

        for meta in ALIGNN2_MODELS.values():
            if meta.get("target") == target and target:
                return target, str(meta.get("unit", ""))
    except ImportError:  # pragma: no cover
        pass
    return (target or "output"), ""


# --------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------


class AlignnModel(torch.nn.Module):
    """An ALIGNN network plus the graph settings and element table it was trained with."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        self.net = make_network(config["model"])
        self.atom_features = str(config.get("atom_features", "cgcnn"))
        n_in = self.net.config.atom_input_features
        table, ok = element_feature_table(self.atom_features)
        if table.shape[1] != n_in:
            raise InputError(
                f"model expects {n_in} atom input features but {self.atom_features!r} "
                f"features have {table.shape[1]}"
            )
        self.register_buffer("element_table", table, persistent=False)
        self.featurised_z = ok
        # missing keys take alignn's TrainingConfig defaults, as alignn itself would
        self.cutoff = float(config.get("cutoff", 5.0))
        tbc = config.get("three_body_cutoff", 3.5)
        self.three_body_cutoff = min(float(tbc), self.cutoff) if tbc is not None else self.cutoff
        mn = config.get("max_neighbors", 12)
        self.max_neighbors = int(mn) if mn else None
        strategy = str(config.get("neighbor_strategy", "k-nearest"))
        if strategy not in GRAPH_STRATEGIES:
            raise InputError(
                f"neighbor_strategy {strategy!r} is not supported ({', '.join(GRAPH_STRATEGIES)})"
            )
        self.strategy = strategy

    def graph(self, batch: SoftCrystalBatch) -> CrystalGraph:
        """The neighbour/line graph for the batch's current geometry."""
        return build_batch_graph(
            batch, self.cutoff, self.three_body_cutoff, self.max_neighbors, self.strategy
        )

    def forward(
        self,
        batch: SoftCrystalBatch,
        graph: CrystalGraph,
        atom_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-crystal prediction (B,) over a fixed graph."""
        if atom_feats is None:
            table = self.element_table.to(batch.element_probs.dtype)
            atom_feats = batch.element_probs @ table
        return network_forward(
            self.net,
            atom_feats,
            batch.lattice,
            batch.frac_coords,
            batch.crystal_index,
            batch.n_crystals,
            graph,
        )


def load_model(checkpoint: Checkpoint) -> AlignnModel:
    """Build the network from ``config.json`` and load the mapped state dict."""
    model = AlignnModel(checkpoint.config)
    state = map_state_dict(checkpoint.state, model.net, checkpoint.source)
    model.net.load_state_dict(state, strict=True)
    model.eval()
    return model


class AlignnPredictor(Predictor):
    """Differentiable ALIGNN property predictor (see module docstring)."""

    name = "alignn"
    needs_graph_refresh = True

    def __init__(
        self,
        model: AlignnModel,
        property_name: str,
        units: str,
        card: dict[str, Any] | None = None,
        training_elements_only: bool = True,
        device: str | torch.device = "cpu",
    ):
        self.model = model.to(device)
        self.device = torch.device(device)
        self.card = dict(card or {})
        self.property_name = property_name
        self.properties = {property_name: units}
        supported = set(model.featurised_z)
        train_z = self.card.get("elements_z")
        if training_elements_only and train_z:
            supported &= {int(z) for z in train_z}
        self.supported_z = frozenset(supported)
        self._graph: CrystalGraph | None = None
        self._graph_key: tuple | None = None

    def refresh(self, batch: SoftCrystalBatch) -> None:
        """Rebuild the neighbour and line graphs from the batch's current geometry."""
        self._graph = self.model.graph(batch)
        self._graph_key = self._key(batch)

    @staticmethod
    def _key(batch: SoftCrystalBatch) -> tuple:
        return (tuple(batch.n_sites.tolist()), str(batch.device))

    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        """``{property: (B,)}``; builds the graph on first use or when the batch shape changes."""
        if self._graph is None or self._graph_key != self._key(batch):
            self.refresh(batch)
        return {self.property_name: self.model(batch, self._graph)}

    def to(self, device: str | torch.device) -> AlignnPredictor:
        """Move the network (and any cached graph) to ``device``."""
        self.device = torch.device(device)
        self.model.to(device)
        if self._graph is not None:
            self._graph = self._graph.to(device)
        return self


def build(
    device: str | torch.device = "cpu",
    model: str | os.PathLike = "perov5-band-gap",
    property: str | None = None,  # noqa: A002 - campaign YAML key
    units: str | None = None,
    training_elements_only: bool = True,
    download: bool = True,
    **kw: Any,
) -> AlignnPredictor:
    """Build an ALIGNN predictor from a shipped/cached model name, a path, or an alignn name.

    ``property``/``units`` override what the model card (or alignn target) declares;
    ``training_elements_only`` restricts ``supported_z`` to the elements of the training set
    when the card lists them.
    """
    if kw:
        raise InputError(f"alignn predictor: unknown options {sorted(kw)}")
    ckpt = read_checkpoint(resolve_model(model, download=download))
    net = load_model(ckpt)
    prop, unit = property_of(ckpt.config, ckpt.card)
    return AlignnPredictor(
        net,
        property_name=property or prop,
        units=units if units is not None else unit,
        card=ckpt.card,
        training_elements_only=training_elements_only,
        device=device,
    )


def predict_structures(
    predictor: AlignnPredictor, structures: list[Any], batch_size: int = 128
) -> list[float]:
    """Predictions for pymatgen Structures (graph rebuilt for every batch), in order."""
    values: list[float] = []
    with torch.no_grad():
        for i in range(0, len(structures), batch_size):
            batch = SoftCrystalBatch.from_structures(
                structures[i : i + batch_size], device=predictor.device
            )
            predictor.refresh(batch)
            out = predictor.predict(batch)[predictor.property_name]
            values.extend(float(v) for v in out.cpu())
    return values
