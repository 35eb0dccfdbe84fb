"""smoacs-flows: SMOACS crystal design with an MLIP/DFT validation pipeline."""

__version__ = "0.1.0"
