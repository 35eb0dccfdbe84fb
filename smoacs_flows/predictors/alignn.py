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

Seams: :mod:`~smoacs_flows.predictors.alignn_graph` (element table, graphs),
:mod:`~smoacs_flows.predictors.alignn_network` (the network and its forward),
:mod:`~smoacs_flows.predictors.alignn_checkpoint` (checkpoint files, model names); this module
holds the model and the predictor and re-exports the public names of the other three.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from smoacs_flows.errors import InputError
from smoacs_flows.predictors.alignn_checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    SHIPPED_DIR,
    TARGET_PROPERTIES,
    WEIGHTS_FILE,
    Checkpoint,
    map_state_dict,
    model_cache_dirs,
    property_of,
    read_checkpoint,
    resolve_model,
    shipped_models,
)
from smoacs_flows.predictors.alignn_graph import (
    CrystalGraph,
    batch_graphs,
    build_batch_graph,
    crystal_graph_single,
    element_feature_table,
    knn_graph_single,
    line_graph,
    neighbor_list,
)
from smoacs_flows.predictors.alignn_network import (
    OUTPUT_HEADS,
    PURE_COMPATIBLE,
    apply_head,
    gate_override,
    gate_params,
    make_network,
    network_forward,
    output_head,
)
from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "GRAPH_STRATEGIES",
    "OUTPUT_HEADS",
    "PURE_COMPATIBLE",
    "SHIPPED_DIR",
    "TARGET_PROPERTIES",
    "WEIGHTS_FILE",
    "AlignnModel",
    "apply_head",
    "AlignnPredictor",
    "gate_override",
    "Checkpoint",
    "CrystalGraph",
    "batch_graphs",
    "build",
    "build_batch_graph",
    "crystal_graph_single",
    "element_feature_table",
    "knn_graph_single",
    "line_graph",
    "load_model",
    "make_network",
    "map_state_dict",
    "model_cache_dirs",
    "neighbor_list",
    "network_forward",
    "output_head",
    "predict_structures",
    "property_of",
    "read_checkpoint",
    "resolve_model",
    "shipped_models",
]

#: extra property of a hurdle model: the classifier logit of "gapped"
GAPPED_LOGIT = "gapped_logit"

#: graph strategies of alignn's config that this module reproduces
GRAPH_STRATEGIES = ("pure_torch", "k-nearest")


class AlignnModel(torch.nn.Module):
    """An ALIGNN network plus the graph settings and element table it was trained with."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        self.head = output_head(config)
        self.gate = gate_params(config)
        self.net = make_network(config["model"], OUTPUT_HEADS[self.head])
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
        gate: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Per-crystal prediction (B,) over a fixed graph (the output head applied, with
        ``gate`` = (sharpness, bias) instead of the config's when given)."""
        return apply_head(self.head, self.raw(batch, graph, atom_feats), *(gate or self.gate))

    def raw(
        self,
        batch: SoftCrystalBatch,
        graph: CrystalGraph,
        atom_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The network's output before the head: (B,), or (B, 2) for the ``hurdle`` head."""
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
        gate: tuple[float, float] | None = None,
    ):
        self.model = model.to(device)
        #: optimisation-only hurdle gate (sharpness, bias); None = the model's own
        self.gate = gate
        self.device = torch.device(device)
        self.card = dict(card or {})
        self.property_name = property_name
        self.properties = {property_name: units}
        if model.head == "hurdle":
            # the classifier's logit of "gapped" (P = sigmoid(l)): a gradient where the gate
            # saturates (loss term ``gapped``: softplus(-l))
            self.properties[GAPPED_LOGIT] = "logit"
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
        if self.model.head != "hurdle":
            return {self.property_name: self.model(batch, self._graph, gate=self.gate)}
        raw = self.model.raw(batch, self._graph)
        value = apply_head("hurdle", raw, *(self.gate or self.model.gate))
        return {self.property_name: value, GAPPED_LOGIT: raw[:, 0]}

    def for_scoring(self) -> AlignnPredictor:
        """This predictor with the model's own gate (sharing the network) when ``gate``
        overrides it for optimisation, else itself."""
        if self.gate is None:
            return self
        scorer = copy.copy(self)
        scorer.gate = None
        scorer._graph = scorer._graph_key = None
        return scorer

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
    gate: dict[str, float] | None = None,
    **kw: Any,
) -> AlignnPredictor:
    """Build an ALIGNN predictor from a shipped/cached model name, a path, or an alignn name.

    ``property``/``units`` override what the model card (or alignn target) declares;
    ``training_elements_only`` restricts ``supported_z`` to the elements of the training set
    when the card lists them. ``gate: {sharpness: k, bias: b}`` replaces a ``hurdle`` model's
    gate sigmoid(k (l - b)) while optimising (``{sharpness: 1, bias: 0}`` = P(gapped) as
    trained, which keeps a gradient where the model's sharp gate has none); exported candidates
    are still scored with the model's own gate (:meth:`AlignnPredictor.for_scoring`).
    """
    if kw:
        raise InputError(f"alignn predictor: unknown options {sorted(kw)}")
    if gate is not None:
        gate_override(gate, "hurdle")  # value errors before any model is read
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
        gate=gate_override(gate, net.head),
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
