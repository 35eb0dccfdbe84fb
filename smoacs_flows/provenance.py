"""What a campaign ran with, for a report a scientist can cite: the code version (and its git
revision when installed from a checkout) and each predictor's weights with their sha256.

Recorded by the proposal jobs (the machine that loaded the weights), shown by the report.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime: float) -> str:
    """sha256 of a file (cached per path, size and mtime: a job hashes each file once)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime)


def git_revision(where: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``where`` (this package by
    default), or None when it is not in one (an installed wheel) or git is missing."""
    where = Path(where or Path(__file__).parent)
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None


def code_version() -> dict[str, Any]:
    """smoacs-flows' version and git revision."""
    from smoacs_flows import __version__

    return {"smoacs_flows": __version__, "git": git_revision()}


def _weight_files(spec: dict[str, Any]) -> list[Path]:
    """The weight files a predictor spec loads (empty when they cannot be found here)."""
    kind, model = spec.get("type"), spec.get("model")
    if kind == "chgnet":
        if model is None or model in {"0.3.0", "0.2.0", "r2scan"}:
            import importlib.util

            found = importlib.util.find_spec("chgnet")
            if not found or not found.origin:
                return []
            folder = Path(found.origin).parent / "pretrained" / (model or "0.3.0")
            return sorted(folder.glob("*.pth.tar"))
        return [Path(model)] if Path(str(model)).is_file() else []
    if kind == "alignn" and model is not None:
        from smoacs_flows.predictors.alignn_checkpoint import resolve_model

        p = resolve_model(model, download=False)
        return sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    if kind == "mattersim":
        from smoacs_flows.predictors.mattersim import resolve_checkpoint

        return [resolve_checkpoint(model, download=False)]
    return []


def predictor_weights(predictors: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per predictor: name, type, model and each weight file with its sha256 (an ``error``
    where the files cannot be resolved)."""
    out = []
    for name, spec in sorted(predictors.items()):
        row: dict[str, Any] = {"name": name, "type": spec.get("type"), "model": spec.get("model")}
        try:
            files = _weight_files(spec)
            row["weights"] = [{"file": str(f), "sha256": file_sha256(f)} for f in files]
        except Exception as exc:  # noqa: BLE001 - provenance must never fail a job
            row["weights"] = []
            row["error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
    return out
