"""The SMOACS optimiser: pure torch, no workflow imports."""
