"""MLIP relaxation of cell and positions: torch-sim (default), our lockstep ASE path, atomate2.

Three paths give the same trajectories (FIRE with the Frechet cell filter, same fmax, step cap
and MLIP; energies checked against ASE's ``FIRE`` + ``FrechetCellFilter`` in the tests):

* ``torchsim`` (default, fastest; ``relax_torchsim.py``): torch-sim's batched FIRE, every
  structure in one set of tensors, one MLIP call per step, with our failure guards.
* ``batched`` (ours): every active structure has its own ASE optimiser and filter, driven in
  lockstep; the forces/stresses of all of them come from **one** MLIP call per step
  (continuous batching: finished structures leave, new ones join). It also runs ``BFGS``,
  which torch-sim does not have, and is torch-sim's fallback.
* ``atomate2``: atomate2's ``ForceFieldRelaxMaker`` run under jobflow's ``run_locally``, one
  structure per job.

A structure that cannot be relaxed (NaN or degenerate lattice, overlapping atoms, elements the
MLIP does not cover, no neighbours, non-finite energies, an exploding cell) gets a failed
:class:`RelaxResult` with the reason; the batch always completes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from ase.stress import full_3x3_to_voigt_6_stress
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from smoacs_flows.errors import InputError
from smoacs_flows.screening.methods import (
    DEFAULT_METHOD,
    DEFAULT_OPTIMIZER,
    METHODS,
    OPTIMIZER_NAMES,
)
from smoacs_flows.screening.prefilter import structure_problem

#: MLIPs by our name → atomate2's force-field name and the largest atomic number they cover
MLIPS: dict[str, dict[str, Any]] = {
    "chgnet": {"atomate2": "CHGNet", "max_z": 94},
    "mattersim": {"atomate2": "MatterSim", "max_z": 94},
}
OPTIMIZERS = dict(zip(OPTIMIZER_NAMES, (FIRE, BFGS), strict=True))
#: environment variable naming a local MatterSim checkpoint (no download offline)
MATTERSIM_CHECKPOINT_ENV = "SMOACS_MATTERSIM_CHECKPOINT"


@dataclass
class RelaxResult:
    """Outcome of relaxing one structure."""

    index: int
    ok: bool
    structure: Structure | None = None  # relaxed structure (None when failed)
    energy_per_atom: float | None = None  # eV/atom, raw MLIP energy (no corrections)
    converged: bool = False
    steps: int = 0
    wall_time: float = 0.0  # seconds spent on this structure (its share of batched calls)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "ok": self.ok,
            "structure": self.structure.as_dict() if self.structure is not None else None,
            "energy_per_atom": self.energy_per_atom,
            "converged": self.converged,
            "steps": self.steps,
            "wall_time": self.wall_time,
            "error": self.error,
        }


def check_structure(s: Structure, max_z: int = 94, min_distance: float = 0.5) -> str | None:
    """Why ``s`` cannot be relaxed, or None. Cheap checks done before any MLIP call: the
    prefilter's :func:`~smoacs_flows.screening.prefilter.structure_problem` (NaN, degenerate
    lattice), then disorder, elements the MLIP lacks and overlapping atoms or images."""
    why = structure_problem(s)
    if why:
        return why
    if not s.is_ordered:
        return "disordered structure (partial occupancies)"
    bad = sorted({el.symbol for el in s.composition.elements if max_z < el.Z})
    if bad:
        return f"element(s) {', '.join(bad)} not supported by the MLIP (Z > {max_z})"
    if len(s) > 1:
        d = s.distance_matrix
        np.fill_diagonal(d, np.inf)
        dmin = float(d.min())
        if dmin < min_distance:
            return f"overlapping atoms (minimum distance {dmin:.3f} Å < {min_distance} Å)"
    # periodic self-images closer than min_distance (tiny cells)
    lengths = np.linalg.norm(np.asarray(s.lattice.matrix, dtype=float), axis=1)
    if float(lengths.min()) < min_distance:
        return f"overlapping periodic images (lattice vector {lengths.min():.3f} Å)"
    return None


# ----------------------------------------------------------------------------- evaluators


class BatchEvaluator:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å^3, 3x3) for a list of structures."""

    name = "base"

    def evaluate(self, atoms: Sequence[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """One MLIP call for all ``atoms``; raises if any structure cannot be evaluated."""
        raise NotImplementedError

    def evaluate_each(
        self, atoms: Sequence[Atoms]
    ) -> list[tuple[float, np.ndarray, np.ndarray] | Exception]:
        """Batched evaluation; on failure, retry one by one so only the culprit fails."""
        try:
            return list(self.evaluate(atoms))
        except Exception:  # isolate the structure(s) responsible
            out: list[Any] = []
            for a in atoms:
                try:
                    out.append(self.evaluate([a])[0])
                except Exception as exc:  # noqa: BLE001 - recorded per structure
                    out.append(exc)
            return out


def resolve_device(device: str | None) -> str:
    """A torch device name: ``auto`` (or None) is CUDA when present, else the CPU."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        from smoacs_flows.config import note_cpu_fallback

        note_cpu_fallback("the MLIP relaxation")
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device: {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device: 'cuda' was asked for but no CUDA device is available")
    return str(dev)


def mattersim_checkpoint(model: str | None = None) -> str:
    """The MatterSim checkpoint to relax with: ``model`` (a file or a released name such as
    ``MatterSim-v1.0.0-1M``, found in MatterSim's own cache ``~/.local/mattersim/
    pretrained_models``), else ``$SMOACS_MATTERSIM_CHECKPOINT``, else the default release from
    MatterSim's cache (downloaded by MatterSim's helper when the network allows)."""
    from smoacs_flows.predictors.mattersim import DEFAULT_MODEL, resolve_checkpoint

    model = model or os.environ.get(MATTERSIM_CHECKPOINT_ENV) or DEFAULT_MODEL
    try:
        return str(resolve_checkpoint(model))
    except InputError as exc:
        raise InputError(
            f"MatterSim relaxation: {exc}; or set {MATTERSIM_CHECKPOINT_ENV}=/path/to/"
            "mattersim-v1.0.0-1M.pth, or use --mlip chgnet (stages.screening.mlip: chgnet)"
        ) from None


class CHGNetEvaluator(BatchEvaluator):
    """CHGNet (weights ship with the wheel); conventions as ``CHGNetCalculator``."""

    name = "chgnet"

    def __init__(self, model: Any = None, batch_size: int = 64, device: str | None = "auto"):
        from chgnet.model import CHGNet

        self.model = model or CHGNet.load(verbose=False, use_device=resolve_device(device))
        self.batch_size = batch_size

    def evaluate(self, atoms: Sequence[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        structures = [AseAtomsAdaptor.get_structure(a) for a in atoms]
        graphs = [self.model.graph_converter(s) for s in structures]
        preds = self.model.predict_graph(graphs, task="efs", batch_size=self.batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        out = []
        for s, p in zip(structures, preds):
            n = len(s) if self.model.is_intensive else 1
            out.append(
                (
                    float(p["e"]) * n,
                    np.asarray(p["f"], float),
                    np.asarray(p["s"], float) * units.GPa,
                )
            )
        return out


class MatterSimEvaluator(BatchEvaluator):
    """MatterSim from a checkpoint (:func:`mattersim_checkpoint`) on ``device``."""

    name = "mattersim"

    def __init__(
        self,
        load_path: str | None = None,
        device: str | None = "auto",
        potential: Any = None,
        model: str | None = None,
    ) -> None:
        if potential is not None:  # an already-loaded mattersim Potential
            self.potential = potential
            return
        from smoacs_flows.predictors.mattersim import load_potential

        path = load_path or mattersim_checkpoint(model)
        self.device = resolve_device(device)
        # read with weights_only=True and checked before MatterSim's own loader
        self.potential = load_potential(path, device=self.device, download=False)

    def evaluate(self, atoms: Sequence[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        from mattersim.datasets.utils.build import build_dataloader

        args = self.potential.model.model_args
        loader = build_dataloader(
            list(atoms),
            batch_size=len(atoms),
            only_inference=True,
            cutoff=args.get("cutoff", 5.0),
            threebody_cutoff=args.get("threebody_cutoff", 4.0),
        )
        e, f, s = self.potential.predict_properties(
            loader, include_forces=True, include_stresses=True
        )
        return [
            (float(ei), np.asarray(fi, float), np.asarray(si, float) * units.GPa)
            for ei, fi, si in zip(e, f, s)
        ]


def make_evaluator(mlip: str, **kwargs: Any) -> BatchEvaluator:
    """The batch evaluator for an MLIP name (``chgnet`` | ``mattersim``)."""
    if mlip == "chgnet":
        return CHGNetEvaluator(**kwargs)
    if mlip == "mattersim":
        return MatterSimEvaluator(**kwargs)
    raise InputError(f"unknown MLIP {mlip!r} (choose one of {', '.join(MLIPS)})")


class _PrecomputedCalculator(Calculator):
    """Returns the results the batch step stored for exactly this atomic state."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def store(self, atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray) -> None:
        self.atoms = atoms.copy()
        stress = np.asarray(stress)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "stress": full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress,
        }

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        raise RuntimeError("batched relaxer: asked for a state that was not evaluated")


# ----------------------------------------------------------------------------- batched path


@dataclass
class _Slot:
    index: int
    atoms: Atoms
    opt: Any
    n_atoms: int
    volume0: float
    t_spent: float = 0.0
    steps: int = 0
    energy: float = math.nan


def precheck(
    structures: Sequence[Structure],
    mlip_name: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, RelaxResult], list[int]]:
    """:func:`check_structure` on every input: failed results by index for the rejected ones
    (reported to ``progress``), and the indices to relax, in order."""
    max_z = MLIPS.get(mlip_name, {"max_z": 94})["max_z"]
    results: dict[int, RelaxResult] = {}
    ok: list[int] = []
    for i, s in enumerate(structures):
        why = check_structure(s, max_z=max_z)
        if why:
            results[i] = RelaxResult(i, ok=False, error=why)
        else:
            ok.append(i)
    if progress and results:
        progress(len(results))
    return results, ok


def relax_batched(
    structures: Sequence[Structure],
    mlip: str | BatchEvaluator = "chgnet",
    fmax: float = 0.01,
    steps: int = 500,
    optimizer: str = DEFAULT_OPTIMIZER,
    max_atoms_per_batch: int = 1024,
    progress: Callable[[int], None] | None = None,
    device: str | None = "auto",
    model: str | None = None,
) -> list[RelaxResult]:
    """Relax cell and positions of every structure, all in lockstep with batched MLIP calls.

    Convergence: max force on the filter's degrees of freedom (atoms and cell) < ``fmax``.
    A structure still unconverged after ``steps`` optimiser steps is returned with
    ``converged=False`` (not a failure).
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r} (FIRE or BFGS)")
    if isinstance(mlip, BatchEvaluator):
        evaluator = mlip
    elif mlip == "mattersim":
        evaluator = make_evaluator(mlip, device=device, model=model)
    else:
        evaluator = make_evaluator(mlip, device=device)
    results, queue = precheck(structures, evaluator.name, progress)
    active: list[_Slot] = []
    queue.reverse()

    def finish(slot: _Slot, ok: bool, converged: bool = False, error: str | None = None) -> None:
        res = RelaxResult(
            slot.index,
            ok=ok,
            converged=converged,
            steps=slot.steps,
            wall_time=slot.t_spent,
            error=error,
        )
        if ok:
            a = slot.atoms
            res.structure = AseAtomsAdaptor.get_structure(a)
            res.energy_per_atom = slot.energy / slot.n_atoms
        results[slot.index] = res
        if progress:
            progress(1)

    opt_cls = OPTIMIZERS[optimizer]
    while queue or active:
        n_active_atoms = sum(s.n_atoms for s in active)
        while queue and (
            not active or n_active_atoms + len(structures[queue[-1]]) <= max_atoms_per_batch
        ):
            i = queue.pop()
            atoms = AseAtomsAdaptor.get_atoms(structures[i])
            calc = _PrecomputedCalculator()
            atoms.calc = calc
            filt = FrechetCellFilter(atoms)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = opt_cls(filt, logfile=None)
            opt.fmax = fmax
            active.append(_Slot(i, atoms, opt, len(atoms), atoms.get_volume()))
            n_active_atoms += len(atoms)
        t0 = time.perf_counter()
        evals = evaluator.evaluate_each([s.atoms for s in active])
        dt = time.perf_counter() - t0
        still: list[_Slot] = []
        for slot, ev in zip(active, evals):
            slot.t_spent += dt * slot.n_atoms / max(n_active_atoms, 1)
            if isinstance(ev, Exception):
                finish(
                    slot,
                    False,
                    error=f"MLIP evaluation failed at step {slot.steps}: "
                    f"{type(ev).__name__}: {str(ev).splitlines()[0] if str(ev) else ''}",
                )
                continue
            energy, forces, stress = ev
            if not (
                math.isfinite(energy)
                and np.all(np.isfinite(forces))
                and np.all(np.isfinite(stress))
            ):
                finish(slot, False, error=f"non-finite energy/forces/stress at step {slot.steps}")
                continue
            vol = slot.atoms.get_volume()
            if not (0.2 < vol / slot.volume0 < 5.0):
                finish(
                    slot,
                    False,
                    error=f"cell exploded at step {slot.steps} "
                    f"(volume {slot.volume0:.1f} → {vol:.1f} Å^3)",
                )
                continue
            slot.atoms.calc.store(slot.atoms, energy, forces, stress)
            slot.energy = energy
            gradient = slot.opt.optimizable.get_gradient()
            if slot.opt.gradient_converged(gradient):
                finish(slot, True, converged=True)
            elif slot.steps >= steps:
                finish(slot, True, converged=False)
            else:
                slot.opt.step()
                slot.steps += 1
                still.append(slot)
        active = still
    return [results[i] for i in range(len(structures))]


# ----------------------------------------------------------------------------- atomate2 path


def relax_atomate2(
    structures: Sequence[Structure],
    mlip: str = "chgnet",
    fmax: float = 0.01,
    steps: int = 500,
    optimizer: str = DEFAULT_OPTIMIZER,
    progress: Callable[[int], None] | None = None,
    device: str | None = "auto",
    model: str | None = None,
) -> list[RelaxResult]:
    """One atomate2 ``ForceFieldRelaxMaker`` job per structure, run with jobflow locally."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    if mlip not in MLIPS:
        raise InputError(f"unknown MLIP {mlip!r} (choose one of {', '.join(MLIPS)})")
    dev = resolve_device(device)
    calc_kwargs: dict[str, Any] = {"use_device": dev}  # CHGNetCalculator's name for it
    if mlip == "mattersim":
        from pathlib import Path

        from smoacs_flows.predictors.mattersim import _validate_checkpoint

        path = mattersim_checkpoint(model)
        _validate_checkpoint(Path(path))  # weights_only read and layout check first
        calc_kwargs = {"device": dev, "load_path": path}
    maker = ForceFieldRelaxMaker(
        force_field_name=MLIPS[mlip]["atomate2"],
        steps=steps,
        relax_kwargs={"fmax": fmax},
        optimizer_kwargs={"optimizer": optimizer},
        calculator_kwargs=calc_kwargs,
    )
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    out: list[RelaxResult] = []
    for i, s in enumerate(structures):
        why = check_structure(s, max_z=MLIPS[mlip]["max_z"])
        if why:
            out.append(RelaxResult(i, ok=False, error=why))
        else:
            t0 = time.perf_counter()
            try:
                job = maker.make(s)
                # atomate2 writes trajectory/xyz files into the job folder: a temporary one
                with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                    warnings.simplefilter("ignore")
                    responses = run_locally(
                        job,
                        store=store,
                        log=False,
                        ensure_success=True,
                        create_folders=True,
                        root_dir=tmp,
                    )
                doc = responses[job.uuid][1].output
                e = float(doc.output.energy_per_atom)
                ok = math.isfinite(e)
                out.append(
                    RelaxResult(
                        i,
                        ok=ok,
                        structure=doc.output.structure if ok else None,
                        energy_per_atom=e if ok else None,
                        converged=bool(doc.is_force_converged),
                        steps=int(doc.output.n_steps or 0),
                        wall_time=time.perf_counter() - t0,
                        error=None if ok else "non-finite energy",
                    )
                )
            except Exception as exc:  # noqa: BLE001 - recorded per structure
                out.append(
                    RelaxResult(
                        i,
                        ok=False,
                        wall_time=time.perf_counter() - t0,
                        error=f"atomate2 relaxation failed: {type(exc).__name__}: {exc}",
                    )
                )
        if progress:
            progress(1)
    return out


def relax(
    structures: Sequence[Structure],
    mlip: str = "chgnet",
    method: str = DEFAULT_METHOD,
    fmax: float = 0.01,
    steps: int = 500,
    optimizer: str = DEFAULT_OPTIMIZER,
    progress: Callable[[int], None] | None = None,
    device: str | None = "auto",
    model: str | None = None,
) -> list[RelaxResult]:
    """Relax structures with an MLIP by the chosen path (``torchsim`` | ``batched`` |
    ``atomate2``) on ``device`` (``auto``: CUDA when present); ``model``: MatterSim's
    checkpoint (a file or a released name in MatterSim's cache; default
    ``$SMOACS_MATTERSIM_CHECKPOINT``). torch-sim has no BFGS: ``optimizer="BFGS"`` with
    ``torchsim`` runs on ``batched`` (the same ASE BFGS + ``FrechetCellFilter``)."""
    kw = {"progress": progress, "device": device, "model": model}
    if method not in METHODS:
        raise InputError(f"unknown relaxation method {method!r} ({', '.join(METHODS)})")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r} (FIRE or BFGS)")
    if method == "batched" or (method == "torchsim" and optimizer != "FIRE"):
        return relax_batched(structures, mlip, fmax, steps, optimizer, **kw)
    if method == "atomate2":
        return relax_atomate2(structures, mlip, fmax, steps, optimizer, **kw)
    from smoacs_flows.screening.relax_torchsim import relax_torchsim

    extra = {"model": model} if mlip == "mattersim" else {}
    ev = make_evaluator(mlip, device=device, **extra)
    return relax_torchsim(structures, ev, fmax, steps, progress=progress)
