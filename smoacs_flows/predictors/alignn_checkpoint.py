"""ALIGNN checkpoints: reading alignn's directory / zip layout, mapping state dicts, and
resolving a model name (shipped, cached, or alignn's pretrained registry) to a path.

A checkpoint is a directory or a zip with ``config.json`` (alignn training config: ``cutoff``,
``max_neighbors``, ``model`` ...) and ``best_model.pt`` (a state dict, read with
``weights_only=True``), plus this project's ``model_card.json`` when written by
``smoacs-flows train``.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smoacs_flows.errors import InputError

#: checkpoint files inside a model directory or zip
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "best_model.pt"
CARD_FILE = "model_card.json"

#: models that ship with the package
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"

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
    try:
        card = json.loads(card_b) if card_b else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = getattr(exc, "msg", None) or str(exc)
        raise InputError(f"{path}: model_card.json is not valid JSON ({why})") from None
    if not isinstance(card, dict):
        raise InputError(f"{path}: model_card.json must hold an object, not {type(card).__name__}")
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
