"""MLIP relaxation through torch-sim's batched FIRE (Frechet cell filter): the default engine.

torch-sim (``torch-sim-atomistic``) keeps every structure of a batch in one set of tensors and
steps them together (``ts.optimize`` with ``ts.frechet_cell_fire``, ASE flavour, and its
``InFlightAutoBatcher``: converged structures leave the batch, queued ones join, at most
``max_atoms_per_batch`` atoms at a time). It ships no CHGNet model, so the MLIP is one of our
:class:`~smoacs_flows.screening.relax.BatchEvaluator` objects (CHGNet or MatterSim) wrapped as
a torch-sim ``ModelInterface``: one batched MLIP call per step.

What our own path adds is kept, as torch-sim hooks (the model and the convergence function):

* structures that cannot be relaxed are rejected before any MLIP call
  (:func:`~smoacs_flows.screening.relax.check_structure`);
* a structure whose MLIP evaluation raises or gives non-finite values, or whose cell leaves
  0.2×–5× of its starting volume, leaves the batch as a failure with its reason and step;
  the rest go on;
* convergence is checked every step (``steps_between_swaps=1``), so ``steps`` caps each
  structure's own step count, which is recorded per structure;
* if torch-sim itself fails, the batch is relaxed by ``relax_batched``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from smoacs_flows.screening.relax import (
    BatchEvaluator,
    RelaxResult,
    make_evaluator,
    precheck,
    relax_batched,
)

#: a cell whose volume leaves this range of its start has exploded (as in ``relax_batched``)
VOLUME_RANGE = (0.2, 5.0)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def torchsim_model(evaluator: BatchEvaluator, device: str = "cpu"):
    """``evaluator`` as a torch-sim ``ModelInterface`` (float64; eV, eV/Å, eV/Å^3, ASE sign).

    ``calls`` counts the batched MLIP calls, ``seconds`` their time. A structure the MLIP
    cannot evaluate (it raises, or gives non-finite values) gets a NaN energy and zero forces
    and stress, so FIRE leaves it where it is; ``errors`` holds its reason, one entry per system
    of the last call (None where it was fine)."""
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface

    class EvaluatorModel(ModelInterface):
        """One batched MLIP call per torch-sim step."""

        def __init__(self) -> None:
            super().__init__()
            self._device, self._dtype = torch.device(device), torch.float64
            self._compute_stress = self._compute_forces = True
            self._memory_scales_with = "n_atoms"
            self.calls = 0
            self.seconds = 0.0
            self.errors: list[str | None] = []

        def forward(self, state) -> dict[str, torch.Tensor]:
            self.calls += 1
            t0 = time.perf_counter()
            atoms = ts.io.state_to_atoms(state)
            res = evaluator.evaluate_each(atoms)
            self.seconds += time.perf_counter() - t0
            energies, forces, stresses, self.errors = [], [], [], []
            for a, r in zip(atoms, res):
                err = _first_line(r) if isinstance(r, Exception) else None
                if err is None:
                    e, f, s = r
                    if not (math.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(s))):
                        err = "non-finite energy/forces/stress"
                if err is not None:
                    e, f, s = math.nan, np.zeros((len(a), 3)), np.zeros((3, 3))
                energies.append(e)
                forces.append(f)
                stresses.append(s)
                self.errors.append(err)
            kw = {"dtype": self._dtype, "device": self._device}
            return {
                "energy": torch.tensor(energies, **kw),
                "forces": torch.tensor(np.concatenate(forces), **kw),
                "stress": torch.tensor(np.stack(stresses), **kw),
            }

    return EvaluatorModel()


def relax_torchsim(
    structures: Sequence[Structure],
    mlip: str | BatchEvaluator = "chgnet",
    fmax: float = 0.01,
    steps: int = 500,
    progress: Callable[[int], None] | None = None,
    max_atoms_per_batch: int = 1024,
) -> list[RelaxResult]:
    """Relax cell and positions with torch-sim's batched FIRE; one result per structure.

    Convergence: every atomic force and every cell-force row (the Frechet filter's, as ASE's
    ``FrechetCellFilter``) below ``fmax``, checked after every step. A structure takes at least
    one and at most ``steps`` steps; still unconverged then, it is returned with
    ``converged=False`` (not a failure). Deterministic on the CPU: the same input gives the
    same batches and the same result, bit for bit.
    """
    import torch_sim as ts
    from torch_sim.autobatching import InFlightAutoBatcher

    evaluator = mlip if isinstance(mlip, BatchEvaluator) else make_evaluator(mlip)
    results, ok_idx = precheck(structures, evaluator.name, progress)
    if not ok_idx:
        return [results[i] for i in range(len(structures))]
    todo = [structures[i] for i in ok_idx]
    model = torchsim_model(evaluator)
    batcher = InFlightAutoBatcher(
        model,
        memory_scales_with="n_atoms",
        max_memory_scaler=max(max_atoms_per_batch, *(len(s) for s in todo)),
        return_indices=True,
    )
    v0 = [s.volume for s in todo]
    converged = [False] * len(todo)
    failed: dict[int, str] = {}
    n_steps = max(int(steps), 1)
    reported = [0]

    def check(state: Any, last_energy: Any = None) -> torch.Tensor:
        """torch-sim's force criterion, plus our failure guards; reports finished structures."""
        forces_ok = ts.runners.systemwise_max_force(state) < fmax
        cell_ok = state.cell_forces.norm(dim=2).max(dim=1).values < fmax
        volumes = torch.linalg.det(state.cell).abs().tolist()
        done = []
        for k, j in enumerate(batcher.current_idx):
            step = batcher.swap_attempts[j] + 1  # steps taken by structure j so far
            ratio = volumes[k] / v0[j]
            if model.errors[k] is not None:
                failed[j] = f"MLIP evaluation failed at step {step}: {model.errors[k]}"
            elif not VOLUME_RANGE[0] < ratio < VOLUME_RANGE[1]:
                failed[j] = (
                    f"cell exploded at step {step} (volume {v0[j]:.1f} → {volumes[k]:.1f} Å^3)"
                )
            converged[j] = bool(forces_ok[k] and cell_ok[k])
            done.append(j in failed or converged[j] or step >= n_steps)
        if progress and any(done):
            progress(sum(done))
            reported[0] += sum(done)
        return torch.tensor(done, dtype=torch.bool, device=state.positions.device)

    t0 = time.perf_counter()
    try:
        state = ts.io.structures_to_state(todo, device=model.device, dtype=model.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "reached max steps": our cap is per structure
            final = ts.optimize(
                system=state,
                model=model,
                optimizer=ts.frechet_cell_fire,
                convergence_fn=check,
                autobatcher=batcher,
                max_steps=n_steps,
                steps_between_swaps=1,
            )
        energies = final.energy.detach().cpu().tolist()
        relaxed = ts.io.state_to_structures(final)
    except Exception:  # noqa: BLE001 - our path relaxes the batch and records each failure
        for i, r in zip(ok_idx, relax_batched(todo, evaluator, fmax, steps)):
            r.index = i
            results[i] = r
        if progress and len(ok_idx) > reported[0]:
            progress(len(ok_idx) - reported[0])
        return [results[i] for i in range(len(structures))]
    wall = time.perf_counter() - t0
    taken = [int(batcher.swap_attempts[j]) for j in range(len(todo))]
    work = sum(n * len(s) for n, s in zip(taken, todo)) or 1
    for j, i in enumerate(ok_idx):
        e = energies[j] / len(todo[j])
        share = wall * taken[j] * len(todo[j]) / work
        if j not in failed and not math.isfinite(e):
            failed[j] = f"non-finite energy at step {taken[j]}"
        if j in failed:
            results[i] = RelaxResult(i, ok=False, steps=taken[j], wall_time=share, error=failed[j])
            continue
        results[i] = RelaxResult(
            i,
            ok=True,
            structure=relaxed[j],
            energy_per_atom=e,
            converged=converged[j],
            steps=taken[j],
            wall_time=share,
        )
    return [results[i] for i in range(len(structures))]
