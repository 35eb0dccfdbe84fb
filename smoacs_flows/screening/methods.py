"""Names of the relaxation paths, in one dependency-free module: the settings schema, the
``screen`` command line (which must start without numpy or torch) and ``relax`` all read them.
"""

from __future__ import annotations

#: relaxation paths of :func:`smoacs_flows.screening.relax.relax`
METHODS = ("torchsim", "batched", "atomate2")

#: the default path: torch-sim, chosen by benchmarks/relax_batch.py (docs/architecture.md)
DEFAULT_METHOD = "torchsim"

#: relaxation optimisers (ASE's classes; torch-sim has FIRE only)
OPTIMIZER_NAMES = ("FIRE", "BFGS")

#: the default optimiser
DEFAULT_OPTIMIZER = "FIRE"
