"""``smoacs-flows train``, ``predict`` and ``models list``: ALIGNN predictor training and use."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from smoacs_flows.cli_types import count, count0, fraction, positive
from smoacs_flows.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``predict`` and ``models`` sub-commands."""
    p = sub.add_parser(
        "train",
        help="train an ALIGNN regressor on a table of structures",
        description="Train an ALIGNN regressor on DATA (CSV / JSON / JSON-lines, optionally .gz; "
        "a CIF column or pymatgen structure dicts) and write DIR in alignn's checkpoint layout "
        "(config.json, best_model.pt) with model_card.json and holdout_predictions.csv. "
        "DIR is written atomically, only when training succeeds.",
    )
    p.add_argument("data", type=Path, help="dataset file")
    p.add_argument("--target", required=True, help="target column")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--name", default=None, help="model name (default: DIR's name)")
    p.add_argument("--property", default=None, help="property name (default from the target)")
    p.add_argument("--units", default=None, help="units of the target (default from the target)")
    p.add_argument("--structure-col", default=None, help="structure column (default: cif, ...)")
    p.add_argument("--id-col", default=None, help="id column (default: material_id, id, ...)")
    p.add_argument(
        "--test-data",
        type=Path,
        default=None,
        help="held-out file (default: a seeded --test-frac of DATA)",
    )
    p.add_argument("--epochs", type=count, default=100)
    p.add_argument("--patience", type=count, default=15, help="early-stopping patience (epochs)")
    p.add_argument("--batch-size", type=count, default=64)
    p.add_argument("--lr", type=positive, default=2e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--loss", choices=["mse", "l1"], default="mse")
    p.add_argument(
        "--head",
        choices=["identity", "softplus", "hurdle"],
        default="identity",
        help="output head: raw (identity), softplus (>= 0), or hurdle: P(y > 0) x softplus "
        "(>= 0; trained by cross-entropy on y > 0 plus MSE on the rows with y > 0; for "
        "targets that are mostly exactly 0, such as band gaps)",
    )
    p.add_argument(
        "--pos-weight",
        default=None,
        help="hurdle head: cross-entropy weight of the rows with y > 0, a number > 0 or 'auto' "
        "(n(y = 0) / n(y > 0) of the training split); default unweighted",
    )
    p.add_argument(
        "--gate-by",
        choices=["mae", "f1"],
        default="mae",
        help="hurdle head: choose the gate on the validation split by MAE, or by F1 of "
        "'gapped' (ties to the lower MAE); the card records both and the classifier's ROC AUC",
    )
    p.add_argument("--seed", type=count0, default=0, help="seed of the split and the weights")
    p.add_argument("--val-frac", type=fraction, default=0.1)
    p.add_argument("--test-frac", type=fraction, default=0.1)
    p.add_argument(
        "--max-bad-frac",
        type=fraction,
        default=0.05,
        help="abort when more than this fraction of rows is unusable",
    )
    p.add_argument("--hidden", type=count, default=64, help="hidden features")
    p.add_argument("--alignn-layers", type=count0, default=2)
    p.add_argument("--gcn-layers", type=count0, default=2)
    p.add_argument("--cutoff", type=positive, default=5.0, help="neighbour cutoff, Å")
    p.add_argument("--three-body-cutoff", type=positive, default=3.5, help="triplet cutoff, Å")
    p.add_argument("--max-neighbors", type=count, default=None)
    p.add_argument(
        "--max-minutes",
        type=positive,
        default=None,
        help="stop after this much wall time (not reproducible across machines)",
    )
    p.add_argument("--threads", type=count, default=None, help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "predict",
        help="predict a property for structures with an ALIGNN or MEGNet model",
        description="Predict with MODEL (a shipped/cached model name, a checkpoint directory or "
        "zip, an alignn pretrained name, or a shipped MEGNet model) for INPUT: a CSV with a "
        "'cif' column, a JSON-lines file as 'propose' writes (structure under 'structure'), a "
        "CIF file, or a folder of CIFs.",
    )
    p.add_argument("input", type=Path, help="CSV, JSON-lines, a CIF file or a folder of CIFs")
    p.add_argument("--model", required=True, help="model name or path")
    p.add_argument("--out", type=Path, default=None, help="write CSV here instead of a table")
    p.add_argument("--batch-size", type=count, default=128)
    p.add_argument(
        "--fidelity",
        default=None,
        help="multi-fidelity MEGNet band gap only: PBE (default), GLLB-SC, HSE or SCAN",
    )
    p.set_defaults(func=run_predict)

    p = sub.add_parser("models", help="list available predictor models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pl = msub.add_parser(
        "list",
        help="list shipped and cached models",
        description="The shipped and locally cached ALIGNN models and the shipped MEGNet "
        "models (matgl's published Materials Project weights) with property, units, training "
        "data and held-out MAE (MEGNet: the published test or validation MAE).",
    )
    pl.add_argument("--json", action="store_true", help="a JSON list of objects")
    pl.add_argument(
        "--available", action="store_true", help="also list alignn's downloadable pretrained models"
    )
    pl.set_defaults(func=run_models_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    """Load, train, evaluate, write."""
    import torch

    from smoacs_flows.predictors.alignn_training import (
        DEFAULT_MODEL,
        TrainSettings,
        load_dataset,
        train,
        write_model,
    )

    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise InputError(f"output directory {args.out} exists and is not empty (use --force)")
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("val_frac", "test_frac", "max_bad_frac"):
        if not 0 <= getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1)")
    pos_weight = args.pos_weight
    if pos_weight is not None and pos_weight != "auto":
        try:
            pos_weight = float(pos_weight)
        except ValueError:
            pos_weight = math.nan
        if not (math.isfinite(pos_weight) and pos_weight > 0):
            raise InputError(
                f"--pos-weight must be a number > 0 or 'auto', got {args.pos_weight!r}"
            )
    if args.three_body_cutoff > args.cutoff:
        raise InputError("--three-body-cutoff must not exceed --cutoff")
    if args.threads:
        torch.set_num_threads(args.threads)

    def warn(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    data = load_dataset(
        args.data, args.target, args.structure_col, args.id_col, args.max_bad_frac, warn=warn
    )
    test = None
    if args.test_data is not None:
        test = load_dataset(
            args.test_data,
            args.target,
            args.structure_col,
            args.id_col,
            args.max_bad_frac,
            warn=warn,
        )
    model = {
        **DEFAULT_MODEL,
        "hidden_features": args.hidden,
        "alignn_layers": args.alignn_layers,
        "gcn_layers": args.gcn_layers,
    }
    settings = TrainSettings(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        loss=args.loss,
        head=args.head,
        pos_weight=pos_weight,
        gate_by=args.gate_by,
        seed=args.seed,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        max_minutes=args.max_minutes,
        cutoff=args.cutoff,
        three_body_cutoff=args.three_body_cutoff,
        max_neighbors=args.max_neighbors,
        model=model,
    )
    result = train(
        data,
        args.target,
        settings,
        test_data=test,
        property_name=args.property,
        units=args.units,
        name=args.name or args.out.name,
        progress=not args.quiet,
        log=say,
    )
    write_model(args.out, result, force=args.force)
    card = result.card
    m = card["mae"]
    print(
        f"{card['name']}: {card['property']} ({card['units']}), held-out MAE "
        f"{'n/a' if m is None else f'{m:.4g}'} on {card['holdout']['n']} structures, "
        f"{card['training']['epochs_run']} epochs, {card['training']['seconds']:.0f} s "
        f"-> {args.out}"
    )
    return 0


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def read_structures(path: Path) -> tuple[list[str], list[Any], list[str]]:
    """(ids, structures, problems) from a CSV, JSON-lines file, a CIF file or a folder of CIFs
    (a CIF's id is its file name without ``.cif``)."""
    from smoacs_flows.io import read_jsonl
    from smoacs_flows.predictors.alignn_training import (
        ID_COLUMNS,
        parse_structure,
        read_table,
    )

    ids, structs, problems = [], [], []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".cif")
        if not files:
            raise InputError(f"{path}: folder has no .cif files")
        for f in files:
            try:
                from smoacs_flows.io import check_input_file

                check_input_file(f, "structure file")  # no /dev/zero behind a link
                structs.append(parse_structure(f.read_text()))
                ids.append(f.stem)
            except Exception as exc:  # report and go on
                problems.append(f"{f.name}: {type(exc).__name__}: {exc}")
        return ids, structs, problems
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".cif":  # one structure: a problem is an error, not a skip
        from smoacs_flows.io import check_input_file

        check_input_file(path, "structure file")
        try:
            return [path.stem], [parse_structure(path.read_text())], []
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds on bad CIFs
            raise InputError(f"{path}: not a readable CIF ({type(exc).__name__}: {exc})") from None
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".ndjson")):
        rows, col = read_jsonl(path), "structure"
    elif name.endswith((".csv", ".json")):
        rows = read_table(path)
        col = next((c for c in ("cif", "structure") if rows and c in rows[0]), None)
        if col is None:
            cols = ", ".join(rows[0]) if rows else "none"
            raise InputError(f"{path}: needs a 'cif' (or 'structure') column; columns: {cols}")
    else:
        raise InputError(
            f"{path}: use a .csv, .jsonl (optionally .gz), a .cif file or a folder of CIFs"
        )
    for i, row in enumerate(rows, 1):
        rid = next((row[c] for c in ID_COLUMNS if row.get(c) not in (None, "")), None)
        try:
            structs.append(parse_structure(row.get(col)))
            ids.append(str(rid) if rid is not None else str(i))
        except Exception as exc:
            problems.append(f"row {i}: {type(exc).__name__}: {exc}")
    return ids, structs, problems


def run_predict(args: argparse.Namespace) -> int:
    """Predict and print a table or write CSV."""
    from smoacs_flows.predictors import alignn, megnet

    if megnet.is_megnet_model(args.model):
        predictor: Any = megnet.build(model=args.model, fidelity=args.fidelity)
        predict_structures: Any = megnet.predict_structures
    else:
        if args.fidelity is not None:
            raise InputError("--fidelity applies to the multi-fidelity MEGNet band-gap model")
        predictor = alignn.build(model=args.model, training_elements_only=False)
        predict_structures = alignn.predict_structures
    ids, structs, problems = read_structures(args.input)
    for msg in problems[:20]:
        print(f"warning: skipped {msg}", file=sys.stderr)
    if len(problems) > 20:
        print(f"warning: … {len(problems) - 20} more skipped", file=sys.stderr)
    if not structs:
        raise InputError(f"{args.input}: no readable structures")
    from smoacs_flows.predictors.domain import domain_problems

    card = getattr(predictor, "card", None) or {}
    outside = [(i, domain_problems(card, st)) for i, st in zip(ids, structs)]
    outside = [(i, why) for i, why in outside if why]
    for i, why in outside[:20]:
        print(f"warning: {i}: outside {args.model}'s domain: {'; '.join(why)}", file=sys.stderr)
    if len(outside) > 20:
        print(f"warning: … {len(outside) - 20} more outside its domain", file=sys.stderr)
    t0 = time.time()
    values = predict_structures(predictor, structs, batch_size=args.batch_size)
    prop = predictor.property_name
    units = predictor.properties[prop]
    rows = [(i, prop, float(v), units) for i, v in zip(ids, values)]
    if args.out is not None:
        from smoacs_flows.io import atomic_write_bytes

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "property", "prediction", "units"])
        w.writerows(rows)
        atomic_write_bytes(args.out, buf.getvalue().encode())
        dt = time.time() - t0
        print(f"{len(rows)} predictions ({prop}, {units}) in {dt:.1f} s -> {args.out}")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{prop} ({units}) · {args.model}")
        table.add_column("id")
        table.add_column(prop, justify="right")
        table.add_column("units")
        for i, _, v, u in rows:
            table.add_row(i, f"{v:.4f}", u)
        Console().print(table)
    return 0


# --------------------------------------------------------------------------------------------
# models list
# --------------------------------------------------------------------------------------------


def list_models(available: bool = False) -> list[dict[str, Any]]:
    """Shipped and cached ALIGNN models (and, optionally, alignn's downloadable ones)."""
    from smoacs_flows.predictors.alignn import (
        CARD_FILE,
        CONFIG_FILE,
        SHIPPED_DIR,
        WEIGHTS_FILE,
        model_cache_dirs,
        property_of,
    )

    out, seen = [], set()
    sources = [("shipped", SHIPPED_DIR)] + [("cached", d) for d in model_cache_dirs()]
    for source, root in sources:
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if not ((d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()):
                continue
            if d.name in seen:
                continue
            seen.add(d.name)
            try:
                config = json.loads((d / CONFIG_FILE).read_text())
                card = json.loads((d / CARD_FILE).read_text()) if (d / CARD_FILE).is_file() else {}
            except (OSError, json.JSONDecodeError) as exc:
                out.append(
                    {
                        "name": d.name,
                        "property": None,
                        "units": None,
                        "mae": None,
                        "source": source,
                        "path": str(d),
                        "error": str(exc),
                    }
                )
                continue
            prop, units = property_of(config, card)
            mae = card.get("mae")
            if mae is None:
                mae = _alignn2_meta(d.name).get("test_mae")
            out.append(
                {
                    "name": d.name,
                    "type": "alignn",
                    "property": prop,
                    "units": units,
                    "mae": mae,
                    "target": config.get("target"),
                    "training_data": card.get("training_data")
                    or card.get("dataset", {}).get("path"),
                    "n_train": card.get("split", {}).get("train"),
                    "holdout_n": card.get("holdout", {}).get("n"),
                    "source": source,
                    "path": str(d),
                }
            )
    out.extend(m for m in _megnet_models() if m["name"] not in seen)
    if available:
        try:
            from alignn.pretrained import ALIGNN2_MODELS
        except ImportError:  # pragma: no cover
            ALIGNN2_MODELS = {}
        for name, meta in sorted(ALIGNN2_MODELS.items()):
            if name in seen or meta.get("category") == "forcefield":
                continue
            out.append(
                {
                    "name": name,
                    "type": "alignn",
                    "property": meta.get("target"),
                    "units": meta.get("unit") or None,
                    "mae": meta.get("test_mae"),
                    "target": meta.get("target"),
                    "training_data": meta.get("description"),
                    "source": "alignn pretrained (download)",
                    "path": None,
                }
            )
    return out


def _megnet_models() -> list[dict[str, Any]]:
    """The shipped MEGNet models (matgl's published weights) with their published errors."""
    from smoacs_flows.predictors.megnet import MODELS_DIR, shipped_megnet_models

    out = []
    for name in shipped_megnet_models():
        d = MODELS_DIR / name
        try:
            card = json.loads((d / "provenance.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out.append({"name": name, "type": "megnet", "source": "shipped", "error": str(exc)})
            continue
        errors = card.get("published_errors", {})
        split = "test" if "test_mae" in errors else "validation"
        out.append(
            {
                "name": name,
                "type": "megnet",
                "property": card.get("property"),
                "units": card.get("units"),
                "mae": errors.get(f"{split}_mae"),
                "mae_split": f"published {split}",
                "fidelities": card.get("fidelities"),
                "training_data": card.get("training_data"),
                "source": "shipped",
                "path": str(d),
            }
        )
    return out


def _alignn2_meta(name: str) -> dict:
    try:
        from alignn.pretrained import ALIGNN2_MODELS
    except ImportError:  # pragma: no cover
        return {}
    return ALIGNN2_MODELS.get(name, {})


def run_models_list(args: argparse.Namespace) -> int:
    """Print the model list as a table or JSON."""
    models = list_models(available=args.available)
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="predictor models")
    # names in full however narrow the terminal (they are what --model and YAML take): the
    # name column never shrinks below its longest name, the others fold their text
    longest = max((len(m["name"]) for m in models), default=4)
    table.add_column("name", no_wrap=True, min_width=longest, overflow="fold")
    for col in ("property", "units", "held-out MAE", "training data", "source"):
        table.add_column(col, overflow="fold")
    for m in models:
        mae = m.get("mae")
        mae_s = "—" if mae is None or (isinstance(mae, float) and math.isnan(mae)) else f"{mae:.4g}"
        table.add_row(
            m["name"],
            str(m.get("property")),
            str(m.get("units") or ""),
            mae_s,
            str(m.get("training_data") or ""),
            m["source"],
        )
    Console().print(table)
    return 0
