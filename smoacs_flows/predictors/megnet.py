"""Differentiable MEGNet over soft crystals, from matgl's published weights, without DGL.

Two models trained on the Materials Project ship with the package (``data/models/``, matgl's
``model.json``, ``state.pt``, README and BSD-3 licence, byte for byte; ``provenance.json``
records repository, commit, paths and sha256):

* ``megnet-mp-2018-eform``: formation energy per atom (eV/atom), MP 2018.6.1 (the MEGNet
  data set), published test MAE 0.028 eV/atom; graph cutoff 4 Å;
* ``megnet-mp-2019-bandgap``: band gap (eV), multi-fidelity (PBE, GLLB-SC, HSE, SCAN, in
  matgl's order 0..3), MP 2019.4.1, published validation MAE 0.31 eV; cutoff 5 Å.

On soft crystals (see :mod:`~smoacs_flows.predictors.megnet_network` for the network):

* node features are ``element_probs @ embedding table`` over matgl's 89 elements (Z 1-83 and
  89-94); probability on other elements is refused at refresh;
* the neighbour graph (all pairs closer than the model's cutoff, as matgl's
  ``Structure2Graph``) is built at :meth:`MegnetPredictor.refresh` from the detached geometry
  and kept fixed between refreshes; distances are recomputed differentiably from the lattice
  and fractional coordinates. MEGNet's Gaussian bond basis has no smooth cutoff, so at a
  refresh the prediction can jump where a pair crosses the cutoff; between refreshes it is
  smooth;
* the band-gap model's fidelity is a predictor option (``fidelity: PBE``, the default).

With one-hot distributions and a freshly built graph the output equals matgl's
``model.predict_structure`` (tested against matgl's own predictions).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.predictors._graph import PeriodicGraph, build_periodic_graph, fixed_graph_inputs
from smoacs_flows.predictors.base import Predictor, SoftCrystalBatch
from smoacs_flows.predictors.megnet_network import MegnetNetwork

#: where the shipped models live
MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
#: shipped MEGNet models (directory names under MODELS_DIR)
SHIPPED = ("megnet-mp-2018-eform", "megnet-mp-2019-bandgap")
DEFAULT_MODEL = "megnet-mp-2019-bandgap"
#: matgl's DEFAULT_ELEMENTS (matgl.config, 1.x): Z 1..83 and 89..94, in this order
ELEMENT_Z: tuple[int, ...] = tuple(range(1, 84)) + tuple(range(89, 95))
#: fidelities of the multi-fidelity band-gap model, in matgl's index order
FIDELITIES = ("PBE", "GLLB-SC", "HSE", "SCAN")
_UNSUPPORTED_MASS_TOL = 1e-6
_NORMALIZER = re.compile(r"Normalizer:\s*Mean=([-+0-9.eE]+),\s*Std:\s*([-+0-9.eE]+)")


def shipped_megnet_models() -> list[str]:
    """Names of the MEGNet models that ship with the package."""
    return [n for n in SHIPPED if (MODELS_DIR / n / "model.json").is_file()]


def is_megnet_model(model: str | os.PathLike) -> bool:
    """Whether ``model`` names a shipped MEGNet model or a directory with matgl's files."""
    p = Path(model).expanduser()
    return str(model) in SHIPPED or ((p / "model.json").is_file() and (p / "state.pt").is_file())


def resolve_model_dir(model: str | os.PathLike) -> Path:
    """The directory of a shipped model name or a path holding matgl's model.json/state.pt."""
    p = Path(model).expanduser()
    if not (p / "model.json").is_file():
        p = MODELS_DIR / str(model)
    if not ((p / "model.json").is_file() and (p / "state.pt").is_file()):
        raise InputError(
            f"megnet: {model!r} is neither a shipped model ({', '.join(SHIPPED)}) nor a "
            "directory with matgl's model.json and state.pt"
        )
    return p


@dataclass
class MegnetModel:
    """A loaded MEGNet: network, target normaliser and what it predicts."""

    network: MegnetNetwork
    mean: float
    std: float
    name: str
    property_name: str
    units: str
    fidelities: tuple[str, ...] | None
    card: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"megnet: cannot read {path}: {exc}") from exc


def load_megnet(model: str | os.PathLike = DEFAULT_MODEL) -> MegnetModel:
    """Load matgl's ``model.json`` + ``state.pt`` (``torch.load(weights_only=True)``)."""
    root = resolve_model_dir(model)
    spec = _read_json(root / "model.json")
    try:
        inner = spec["kwargs"]["model"]
        args = inner["init_args"]
        transformer = str(spec["kwargs"].get("target_transformer", ""))
    except (KeyError, TypeError) as exc:
        raise InputError(f"megnet: {root / 'model.json'} is not a matgl MEGNet model") from exc
    if inner.get("@class") != "MEGNet":
        raise InputError(f"megnet: {root} holds a {inner.get('@class')!r}, not a MEGNet")
    if args.get("element_types") not in (None, []):
        raise InputError("megnet: only models over matgl's default element list are supported")
    # TransformedTargetModel's Normalizer (the same doubles as in matgl's model.pt)
    m = _NORMALIZER.search(transformer)
    mean, std = (float(m.group(1)), float(m.group(2))) if m else (0.0, 1.0)
    net = MegnetNetwork(args, n_elements=len(ELEMENT_Z))
    try:
        state = torch.load(root / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"megnet: cannot read {root / 'state.pt'}: {exc}") from exc
    state = {k.removeprefix("model."): v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"megnet: {root / 'state.pt'} does not fit model.json: {exc}") from exc
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    card = _read_json(root / "provenance.json") if (root / "provenance.json").is_file() else {}
    n_state = args.get("ntypes_state")
    fids = tuple(card.get("fidelities") or FIDELITIES[: n_state or 0]) if n_state else None
    return MegnetModel(
        network=net,
        mean=mean,
        std=std,
        name=str(card.get("name", root.name)),
        property_name=str(card.get("property", "band_gap" if n_state else "value")),
        units=str(card.get("units", "")),
        fidelities=fids,
        card=card,
    )


def fidelity_index(fidelity: str | int | None, fidelities: tuple[str, ...] | None) -> int | None:
    """The state index of ``fidelity`` (a name, case-insensitive, or an index); None for a
    single-fidelity model (where giving one is an error)."""
    if fidelities is None:
        if fidelity is not None:
            raise SpecError("megnet: this model has no fidelity option")
        return None
    if fidelity is None:
        return 0
    if isinstance(fidelity, int) and not isinstance(fidelity, bool):
        if 0 <= fidelity < len(fidelities):
            return fidelity
    else:
        names = [f.upper() for f in fidelities]
        key = str(fidelity).upper()
        if key in names:
            return names.index(key)
    raise SpecError(f"megnet: fidelity {fidelity!r} is not one of {list(fidelities)}")


@dataclass
class _MegnetGraph:
    """Fixed edge list of a batch (on the model device) and its segment indices."""

    edges: PeriodicGraph
    index: dict[str, Any]


class MegnetPredictor(Predictor):
    """MEGNet over soft crystals: one property, e.g. ``band_gap`` or
    ``formation_energy_per_atom`` (see module docstring)."""

    name = "megnet"
    needs_graph_refresh = True
    supported_z = frozenset(ELEMENT_Z)

    def __init__(
        self,
        model: MegnetModel,
        fidelity: str | int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        property_name: str | None = None,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.network = model.network.to(device=self.device, dtype=dtype)
        self.fidelity = fidelity_index(fidelity, model.fidelities)
        self.property_name = property_name or model.property_name
        self.properties = {self.property_name: model.units}
        self.cutoff = model.network.cutoff
        # column j of element_probs is Z = j + 1
        self._columns = torch.tensor([z - 1 for z in ELEMENT_Z], dtype=torch.long)
        self._graph: _MegnetGraph | None = None

    @property
    def fidelity_name(self) -> str | None:
        """The selected fidelity's name (None for a single-fidelity model)."""
        fids = self.model.fidelities
        return None if fids is None or self.fidelity is None else fids[self.fidelity]

    def refresh(self, batch: SoftCrystalBatch) -> None:
        """Rebuild the neighbour list (pairs closer than the cutoff) from the batch."""
        probs = batch.element_probs.detach()
        extra = probs.sum(dim=1) - probs[:, self._columns.to(probs.device)].sum(dim=1)
        bad = torch.nonzero(extra > _UNSUPPORTED_MASS_TOL).view(-1)
        if bad.numel():
            i = int(bad[0])
            raise InputError(
                f"megnet: site {i} puts probability {float(extra[i]):.3g} on elements outside "
                "the model's 89 (Z 1-83, 89-94)"
            )
        edges = build_periodic_graph(batch, self.cutoff)
        dev = self.device
        index = {
            "src": edges.center.to(dev),
            "dst": edges.neighbor.to(dev),
            "edge_crystal": edges.edge_crystal.to(dev),
            "crystal_index": batch.crystal_index.detach().to(dev),
            "n": batch.n_crystals,
        }
        self._graph = _MegnetGraph(edges=edges.to(dev, self.dtype), index=index)

    def predict(self, batch: SoftCrystalBatch) -> dict[str, torch.Tensor]:
        """``{property: (B,)}``; builds the graph on first use or when the batch changes."""
        g, out_dtype, lattice, frac, probs = fixed_graph_inputs(self, batch, max(ELEMENT_Z))
        node_probs = probs[:, self._columns.to(probs.device)]
        dist = torch.linalg.norm(g.edges.edge_vectors(lattice, frac), dim=1)
        fid = None
        if self.fidelity is not None:
            fid = torch.tensor([self.fidelity], dtype=torch.long, device=self.device)
        raw = self.network(node_probs, dist, g.index, fid)
        value = raw * self.model.std + self.model.mean
        return {self.property_name: value.to(out_dtype)}

    def to(self, device: str | torch.device) -> MegnetPredictor:
        """Move the network to ``device`` (the graph is rebuilt there on next use)."""
        self.device = torch.device(device)
        self.network.to(self.device)
        self._graph = None
        return self


def build(
    device: str | torch.device = "cpu",
    model: str | os.PathLike = DEFAULT_MODEL,
    fidelity: str | int | None = None,
    dtype: torch.dtype | str = torch.float32,
    property: str | None = None,  # noqa: A002 - campaign YAML key
    **kw: Any,
) -> MegnetPredictor:
    """Build a MEGNet predictor (registry entry ``"megnet"``).

    Args:
        device: torch device.
        model: a shipped name (``megnet-mp-2018-eform``, ``megnet-mp-2019-bandgap``) or a
            directory with matgl's ``model.json`` and ``state.pt``.
        fidelity: band-gap model only: ``PBE`` (default), ``GLLB-SC``, ``HSE`` or ``SCAN``
            (or its index 0-3).
        dtype: compute dtype, ``float32`` (matgl's) or ``float64``.
        property: the property name to publish (default: the model's).
    """
    if kw:
        raise SpecError(f"megnet: unknown option(s) {sorted(kw)}")
    if isinstance(dtype, str):
        if dtype not in {"float32", "float64"}:
            raise SpecError(f"megnet: dtype must be float32 or float64, not {dtype!r}")
        dtype = getattr(torch, dtype)
    return MegnetPredictor(
        load_megnet(model), fidelity=fidelity, device=device, dtype=dtype, property_name=property
    )


def predict_structures(
    predictor: MegnetPredictor, structures: list[Any], batch_size: int = 128
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
