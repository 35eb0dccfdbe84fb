"""Differentiable property predictors behind one interface (see base.py)."""

from smoacs_flows.predictors.base import (
    N_ELEMENTS,
    Predictor,
    SoftCrystalBatch,
    build_predictor,
    register_predictor,
)

__all__ = ["N_ELEMENTS", "Predictor", "SoftCrystalBatch", "build_predictor", "register_predictor"]
