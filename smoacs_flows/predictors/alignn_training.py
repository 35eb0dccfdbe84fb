"""Train an ALIGNN regressor on a table of structures (``smoacs-flows train``).

Input: CSV or JSON / JSON-lines (optionally ``.gz``) with one structure per row (a CIF string
or a pymatgen ``Structure.as_dict()``) and a numeric target column. Rows whose structure cannot
be parsed or whose target is missing/NaN are reported by row number and skipped; more than
``max_bad_frac`` of them aborts. The split is reproducible from the seed (train / validation
for early stopping / held-out test, or an external held-out file). The output directory uses
alignn's checkpoint layout (``config.json`` + ``best_model.pt``) plus ``model_card.json`` and
``holdout_predictions.csv``; it is written atomically. Reading the tables is in
:mod:`~smoacs_flows.predictors.alignn_dataset` (re-exported here).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoacs_flows.errors import InputError
from smoacs_flows.io import atomic_output_dir
from smoacs_flows.predictors.alignn import (
    CARD_FILE,
    CONFIG_FILE,
    OUTPUT_HEADS,
    TARGET_PROPERTIES,
    WEIGHTS_FILE,
    AlignnModel,
    CrystalGraph,
    apply_head,
    batch_graphs,
    crystal_graph_single,
)
from smoacs_flows.predictors.alignn_dataset import (
    ID_COLUMNS,
    STRUCTURE_COLUMNS,
    Dataset,
    file_sha256,
    load_dataset,
    parse_structure,
    read_table,
)
from smoacs_flows.predictors.alignn_hurdle import (  # noqa: F401 - re-exported
    GATE_GRID,
    _tune_gate,
    gate_grid,
    hurdle_loss,
    resolve_pos_weight,
)
from smoacs_flows.predictors.base import SoftCrystalBatch

__all__ = [
    "DEFAULT_MODEL",
    "ID_COLUMNS",
    "STRUCTURE_COLUMNS",
    "Dataset",
    "Sample",
    "TrainResult",
    "TrainSettings",
    "collate",
    "featurise",
    "file_sha256",
    "gate_grid",
    "git_revision",
    "hurdle_loss",
    "load_dataset",
    "mae",
    "parse_structure",
    "predict_samples",
    "read_table",
    "resolve_pos_weight",
    "split_indices",
    "train",
    "write_model",
]

#: small default architecture: a few hundred kB, trainable on a laptop CPU
DEFAULT_MODEL: dict[str, Any] = {
    "name": "alignn_atomwise_pure",
    "alignn_layers": 2,
    "gcn_layers": 2,
    "atom_input_features": 92,
    "edge_input_features": 40,
    "triplet_input_features": 20,
    "embedding_features": 32,
    "hidden_features": 64,
    "output_features": 1,
    "calculate_gradient": False,
    "gradwise_weight": 0.0,
    "atomwise_output_features": 0,
    "use_zbl": False,
    "link": "identity",
}


# --------------------------------------------------------------------------------------------
# Featurised samples and batches
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One featurised crystal: geometry, atomic numbers and its fixed graph."""

    lattice: torch.Tensor  # (3, 3)
    frac: torch.Tensor  # (n, 3)
    z: torch.Tensor  # (n,) long
    graph: tuple[torch.Tensor, ...]  # src, dst, shift, lg_src, lg_dst
    y: float


def featurise(structures: Sequence[Any], targets: Sequence[float], config: dict) -> list[Sample]:
    """Geometry and graphs of every structure, built once (graphs are cached in the sample)."""
    dtype = torch.get_default_dtype()
    cutoff = float(config["cutoff"])
    tbc = float(config.get("three_body_cutoff") or cutoff)
    mn = config.get("max_neighbors")
    out = []
    for s, y in zip(structures, targets):
        lat = torch.tensor(np.asarray(s.lattice.matrix), dtype=dtype)
        frac = torch.tensor(np.asarray(s.frac_coords), dtype=dtype)
        z = torch.tensor([site.specie.Z for site in s], dtype=torch.long)
        out.append(Sample(lat, frac, z, crystal_graph_single(lat, frac, cutoff, tbc, mn), y))
    return out


def collate(samples: Sequence[Sample]) -> tuple[SoftCrystalBatch, CrystalGraph, torch.Tensor]:
    """A batch, its graph, and the atomic numbers (N,) of a list of samples."""
    n = [int(s.z.shape[0]) for s in samples]
    n_sites = torch.tensor(n, dtype=torch.long)
    z = torch.cat([s.z for s in samples])
    batch = SoftCrystalBatch(
        lattice=torch.stack([s.lattice for s in samples]),
        frac_coords=torch.cat([s.frac for s in samples]),
        element_probs=torch.empty(0),  # unused: features are looked up from z directly
        crystal_index=torch.repeat_interleave(torch.arange(len(n)), n_sites),
        n_sites=n_sites,
    )
    return batch, batch_graphs([s.graph for s in samples], n, "cpu"), z


def predict_samples(
    model: AlignnModel, samples: Sequence[Sample], batch_size: int = 256, raw: bool = False
):
    """Predictions (numpy, float64) for featurised samples, in order (``raw``: before the
    output head, (n, 2) for ``hurdle``)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            batch, graph, z = collate(samples[i : i + batch_size])
            feats = model.element_table[z - 1]
            fn = model.raw if raw else model
            out.append(fn(batch, graph, atom_feats=feats).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    """Training hyperparameters (all recorded in the model card)."""

    epochs: int = 100
    patience: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    loss: str = "mse"  # "mse" or "l1"; ignored by the hurdle head (see ``hurdle_loss``)
    head: str = "identity"  # output head (alignn_network.OUTPUT_HEADS), stored in config.json
    # hurdle only: weight of the gapped (y > 0) rows in the cross-entropy; None = unweighted,
    # "auto" = n_metal / n_gapped of the training split
    pos_weight: float | str | None = None
    #: hurdle only: the gate (sharpness, offset) is the grid point with the lowest validation
    #: MAE ("mae"), or the best validation F1 of "gapped" = l > offset, ties to the lower MAE
    #: ("f1"; the MAE-optimal gate predicts 0 for nearly everything on a 4 %-gapped set)
    gate_by: str = "mae"
    seed: int = 0
    val_frac: float = 0.1
    test_frac: float = 0.1
    max_minutes: float | None = None
    cutoff: float = 5.0
    three_body_cutoff: float = 3.5
    max_neighbors: int | None = None
    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))


@dataclass
class TrainResult:
    """What ``train`` produced."""

    model: AlignnModel
    config: dict[str, Any]
    card: dict[str, Any]
    holdout_ids: list[str]
    holdout_targets: np.ndarray
    holdout_predictions: np.ndarray


def split_indices(n: int, seed: int, val_frac: float, test_frac: float):
    """Reproducible (train, val, test) index arrays from a seeded permutation."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_frac * n))
    n_val = max(1, int(round(val_frac * n))) if n > 2 else 0
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    if len(train) == 0:
        raise InputError(f"dataset too small to split ({n} usable rows)")
    return np.sort(train), np.sort(val), np.sort(test)


def git_revision() -> str:
    """The git commit of this package's checkout (``+dirty`` when modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error (NaN for empty input)."""
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b)))) if len(a) else math.nan


def train(
    data: Dataset,
    target: str,
    settings: TrainSettings,
    test_data: Dataset | None = None,
    property_name: str | None = None,
    units: str | None = None,
    name: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train an ALIGNN regressor; early stopping on the validation MAE; evaluate held out."""
    t0 = time.time()
    revision = git_revision()  # of the code that trains, taken before any output is written
    torch.manual_seed(settings.seed)
    config = {
        "version": _alignn_version(),
        "target": target,
        "atom_features": "cgcnn",
        "neighbor_strategy": "pure_torch",
        "cutoff": settings.cutoff,
        "three_body_cutoff": settings.three_body_cutoff,
        "max_neighbors": settings.max_neighbors,
        "random_seed": settings.seed,
        "model": dict(settings.model),
    }
    if settings.head != "identity":  # absent key = alignn's plain output (older checkpoints)
        config["output_head"] = settings.head
        config["model"]["output_features"] = OUTPUT_HEADS.get(settings.head, 1)
    model = AlignnModel(config)
    test_frac = 0.0 if test_data is not None else settings.test_frac
    i_tr, i_va, i_te = split_indices(len(data.targets), settings.seed, settings.val_frac, test_frac)
    samples = featurise(data.structures, data.targets, config)
    tr = [samples[i] for i in i_tr]
    va = [samples[i] for i in i_va]
    if test_data is not None:
        te = featurise(test_data.structures, test_data.targets, config)
        te_ids, te_y = test_data.ids, test_data.targets
    else:
        te = [samples[i] for i in i_te]
        te_ids, te_y = [data.ids[i] for i in i_te], data.targets[i_te]
    y_tr = np.array([s.y for s in tr])
    _init_bias(model, settings.head, y_tr)
    pos_weight = (
        resolve_pos_weight(settings.pos_weight, y_tr) if settings.head == "hurdle" else None
    )
    log(
        f"featurised {len(samples)} structures in {time.time() - t0:.0f} s; "
        f"train {len(tr)}, val {len(va)}, held out {len(te)}"
    )

    opt = torch.optim.AdamW(
        model.net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps_per_epoch = max(1, math.ceil(len(tr) / settings.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.learning_rate, epochs=settings.epochs, steps_per_epoch=steps_per_epoch
    )
    if settings.head == "hurdle":
        loss_fn = partial(hurdle_loss, pos_weight=pos_weight)
    else:
        loss_fn = torch.nn.MSELoss() if settings.loss == "mse" else torch.nn.L1Loss()
    hurdle = settings.head == "hurdle"
    by_mae = settings.loss != "mse" and not hurdle
    gen = torch.Generator().manual_seed(settings.seed)
    best = (math.inf, -1, None)
    best_val_mae = math.nan
    history = []
    bar = _progress(settings.epochs, progress)
    stop_reason = "max epochs"
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(tr), generator=gen).tolist()
        total = 0.0
        for k in range(0, len(order), settings.batch_size):
            batch, graph, z = collate([tr[i] for i in order[k : k + settings.batch_size]])
            y = torch.tensor(
                [tr[i].y for i in order[k : k + settings.batch_size]],
                dtype=torch.get_default_dtype(),
            )
            raw = model.raw(batch, graph, atom_feats=model.element_table[z - 1])
            loss = loss_fn(raw if hurdle else apply_head(model.head, raw), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
        val_mae = val_rmse = val_loss = math.nan
        if va:
            p_va, y_va = predict_samples(model, va), np.array([s.y for s in va])
            val_mae = mae(p_va, y_va)
            val_rmse = float(np.sqrt(np.mean((p_va - y_va) ** 2)))
            if hurdle:
                raw_va = torch.as_tensor(predict_samples(model, va, raw=True))
                val_loss = float(loss_fn(raw_va, torch.as_tensor(y_va)))
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(tr),
                "val_mae": val_mae,
                "val_rmse": val_rmse,
                **({"val_loss": val_loss} if hurdle else {}),
            }
        )
        # early stopping watches the validation value of the training objective: the hurdle
        # loss, the RMSE for mse, the MAE for l1
        score = val_loss if hurdle else (val_mae if by_mae else val_rmse)
        if not va or score < best[0]:
            best = (score, epoch + 1, {k: v.clone() for k, v in model.net.state_dict().items()})
            best_val_mae = val_mae
        bar.update(1)
        bar.set_postfix(loss=f"{total / len(tr):.4f}", val_mae=f"{val_mae:.4f}", best=best[1])
        if va and epoch + 1 - best[1] >= settings.patience:
            stop_reason = f"early stopping (no improvement for {settings.patience} epochs)"
            break
        if settings.max_minutes and time.time() - t0 > 60 * settings.max_minutes:
            stop_reason = f"time limit ({settings.max_minutes} min)"
            break
    bar.close()
    model.net.load_state_dict(best[2])
    model.eval()
    gate_maes = _tune_gate(model, va, pos_weight, settings.gate_by) if hurdle and va else None
    preds = predict_samples(model, te)
    train_seconds = time.time() - t0
    te_y = np.asarray(te_y, dtype=float)
    prop, unit = property_name, units
    if prop is None:
        prop = TARGET_PROPERTIES.get(target, (target, ""))[0]
    if unit is None:
        unit = TARGET_PROPERTIES.get(target, (target, ""))[1]
    elements = sorted({site.specie.Z for s in data.structures for site in s})
    n_params = sum(p.numel() for p in model.net.parameters())
    card = {
        "name": name or Path(data.path).stem,
        "architecture": "ALIGNN (alignn_atomwise_pure, DGL-free), "
        f"{settings.model.get('alignn_layers')} ALIGNN + {settings.model.get('gcn_layers')} GCN "
        f"layers, hidden {settings.model.get('hidden_features')}, {n_params} parameters",
        "property": prop,
        "units": unit,
        "target": target,
        "dataset": {
            "path": Path(data.path).name,
            "sha256": data.sha256,
            "rows": data.n_rows,
            "used": len(data.targets),
            "skipped": {k: len(v) for k, v in data.skipped.items()},
        },
        "split": {
            "seed": settings.seed,
            "train": len(tr),
            "val": len(va),
            "holdout": len(te),
            "holdout_source": (
                f"external file {Path(test_data.path).name}"
                if test_data is not None
                else f"random {settings.test_frac:.0%} of the dataset"
            ),
        },
        "holdout": {
            "n": len(te),
            "mae": mae(preds, te_y),
            "baseline_mae_train_median": mae(np.full(len(te_y), np.median(y_tr)), te_y),
            "target_mean": float(te_y.mean()) if len(te_y) else math.nan,
        },
        "mae": mae(preds, te_y),
        "best_val_mae": best_val_mae,
        "selected_on": "validation hurdle loss"
        if hurdle
        else ("validation MAE" if by_mae else "validation RMSE"),
        "target_range_train": [float(y_tr.min()), float(y_tr.max())],
        "elements_z": elements,
        "training": {
            "epochs_run": len(history),
            "best_epoch": best[1],
            "stop": stop_reason,
            "seconds": round(train_seconds, 1),
            "loss": "hurdle (BCE of gapped + squared gap error on gapped rows, per row)"
            if settings.head == "hurdle"
            else settings.loss,
            "output_head": settings.head,
            **(
                {"pos_weight": pos_weight, "pos_weight_setting": settings.pos_weight}
                if hurdle
                else {}
            ),
            **(
                {
                    "gate_val_mae": gate_maes["mae"],
                    "gate_val_f1": gate_maes["f1"],
                    "gate_selected_by": settings.gate_by,
                    "classifier_val_auc": gate_maes["auc"],
                }
                if gate_maes
                else {}
            ),
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "weight_decay": settings.weight_decay,
            "threads": torch.get_num_threads(),
            "history": history,
        },
        "git_revision": revision,
        "alignn_version": _alignn_version(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if test_data is not None:
        card["holdout"]["sha256"] = test_data.sha256
        card["holdout"]["path"] = Path(test_data.path).name
    if not math.isfinite(card["mae"]):
        card["mae"] = None
        card["holdout"]["mae"] = None
    return TrainResult(model, config, card, list(te_ids), te_y, preds)


def _init_bias(model: AlignnModel, head: str, y: np.ndarray) -> None:
    """Start the output bias at the training statistics (alignn learns raw targets)."""
    with torch.no_grad():
        if head == "hurdle":
            frac = float(np.clip((y > 0).mean(), 1e-3, 1 - 1e-3))
            gap = float(y[y > 0].mean()) if (y > 0).any() else 1.0
            model.net.fc.bias[0] = math.log(frac / (1 - frac))
            model.net.fc.bias[1] = math.log(math.expm1(max(gap, 1e-3)))  # softplus^-1
        elif head == "softplus":
            model.net.fc.bias.fill_(math.log(math.expm1(max(float(y.mean()), 1e-3))))
        else:
            model.net.fc.bias.fill_(float(y.mean()))


def write_model(out: str | Path, result: TrainResult, force: bool = False) -> Path:
    """Write config.json, best_model.pt, model_card.json, holdout_predictions.csv atomically."""
    with atomic_output_dir(out, force=force) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        (tmp / CONFIG_FILE).write_text(json.dumps(result.config, indent=1) + "\n")
        state = {k: v for k, v in result.model.net.state_dict().items() if k != "_species_table"}
        torch.save(state, tmp / WEIGHTS_FILE)
        (tmp / CARD_FILE).write_text(json.dumps(_finite(result.card), indent=1) + "\n")
        with open(tmp / "holdout_predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "target", "prediction"])
            for i, y, p in zip(
                result.holdout_ids, result.holdout_targets, result.holdout_predictions
            ):
                w.writerow([i, repr(float(y)), repr(float(p))])
    return Path(out)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _alignn_version() -> str:
    try:
        from importlib.metadata import version

        return version("alignn")
    except Exception:  # pragma: no cover
        return "unknown"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="epochs", unit="epoch", file=sys.stderr, dynamic_ncols=True)
