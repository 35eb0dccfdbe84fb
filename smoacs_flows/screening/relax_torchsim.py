"""MLIP relaxation through torch-sim's batched FIRE (Frechet cell filter), our MLIP evaluators.

torch-sim (``torch-sim-atomistic``) keeps every structure of a batch in one set of tensors and
steps them together (``ts.optimize`` with ``ts.frechet_cell_fire``, in-flight batching: converged
structures leave the batch). It ships no CHGNet model, so the MLIP is one of our
:class:`~smoacs_flows.screening.relax.BatchEvaluator` objects wrapped as a torch-sim
``ModelInterface`` (one batched MLIP call per step, as in ``relax_batched``).

What our own path adds is kept: structures that cannot be relaxed are rejected before any MLIP
call (:func:`~smoacs_flows.screening.relax.check_structure`), and if torch-sim fails on a batch
(one structure's MLIP evaluation raising, non-finite results) the batch is relaxed by
``relax_batched``, which isolates the culprit and records its reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

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


def torchsim_model(evaluator: BatchEvaluator, device: str = "cpu"):
    """``evaluator`` as a torch-sim ``ModelInterface`` (float64; eV, eV/Å, eV/Å^3, ASE sign);
    its ``calls`` attribute counts the batched MLIP calls."""
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

        def forward(self, state) -> dict[str, torch.Tensor]:
            self.calls += 1
            res = evaluator.evaluate(ts.io.state_to_atoms(state))
            kw = {"dtype": self._dtype, "device": self._device}
            return {
                "energy": torch.tensor([e for e, _, _ in res], **kw),
                "forces": torch.tensor(np.concatenate([f for _, f, _ in res]), **kw),
                "stress": torch.tensor(np.stack([s for _, _, s in res]), **kw),
            }

    return EvaluatorModel()


def relax_torchsim(
    structures: Sequence[Structure],
    mlip: str | BatchEvaluator = "chgnet",
    fmax: float = 0.01,
    steps: int = 500,
    progress: Callable[[int], None] | None = None,
) -> list[RelaxResult]:
    """Relax cell and positions with torch-sim's batched FIRE; one result per structure.

    Convergence: every atomic force and every cell-force row below ``fmax`` (torch-sim's force
    criterion, checked every 5 steps). ``steps`` caps the optimiser steps. ``steps`` in the
    results is the number of batched MLIP calls of the whole run (torch-sim does not count
    steps per structure).
    """
    import torch_sim as ts
    from torch_sim.runners import generate_force_convergence_fn

    evaluator = mlip if isinstance(mlip, BatchEvaluator) else make_evaluator(mlip)
    results, ok_idx = precheck(structures, evaluator.name, progress)
    if ok_idx:
        model = torchsim_model(evaluator)
        converged_fn = generate_force_convergence_fn(force_tol=fmax, include_cell_forces=True)
        t0 = time.perf_counter()
        try:
            state = ts.io.structures_to_state(
                [structures[i] for i in ok_idx], device=model.device, dtype=model.dtype
            )
            final = ts.optimize(
                system=state,
                model=model,
                optimizer=ts.frechet_cell_fire,
                convergence_fn=converged_fn,
                max_steps=steps,
                steps_between_swaps=5,
            )
            energies = final.energy.detach().cpu().numpy()
            if not np.all(np.isfinite(energies)):
                raise FloatingPointError("non-finite energies")
        except Exception:  # noqa: BLE001 - our path isolates the culprit and records why
            fallback = relax_batched([structures[i] for i in ok_idx], evaluator, fmax, steps)
            for i, r in zip(ok_idx, fallback):
                r.index = i
                results[i] = r
            if progress:
                progress(len(ok_idx))
            return [results[i] for i in range(len(structures))]
        dt = time.perf_counter() - t0
        conv = converged_fn(final, None).cpu().tolist()
        relaxed = ts.io.state_to_structures(final)
        n_atoms = [len(structures[i]) for i in ok_idx]
        total = sum(n_atoms)
        for k, i in enumerate(ok_idx):
            e = float(energies[k]) / n_atoms[k]
            results[i] = RelaxResult(
                i,
                ok=math.isfinite(e),
                structure=relaxed[k],
                energy_per_atom=e,
                converged=bool(conv[k]),
                steps=model.calls,
                wall_time=dt * n_atoms[k] / total,
            )
        if progress:
            progress(len(ok_idx))
    return [results[i] for i in range(len(structures))]
