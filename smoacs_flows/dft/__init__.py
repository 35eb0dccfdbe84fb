"""DFT validation: VASP (atomate2) and GPAW chains behind one result schema, half-metal verdicts.

Modules:

- :mod:`.schema`: :class:`DFTResult`, the engine-independent result (JSON-serialisable).
- :mod:`.analysis`: per-spin gaps from eigenvalues, spin polarisation at E_F, verdicts.
- :mod:`.vasp`: the atomate2 Maker chain and its settings (``stages.dft.vasp``).
- :mod:`.vasp_outputs`: VASP outputs (TaskDocs, directories, vasprun.xml) → :class:`DFTResult`.
- :mod:`.gpaw_engine`: the GPAW chain (import needs the ``gpaw`` extra).
- :mod:`.plot`: spin-resolved DOS plots.
- :mod:`.cli`: ``smoacs-flows dft run|analyze``.
"""

from smoacs_flows.dft.analysis import VERDICTS, AnalysisSettings, analyse_spin_channels
from smoacs_flows.dft.schema import DFTResult, DOSData, HalfMetalAnalysis, SpinGap

__all__ = [
    "VERDICTS",
    "AnalysisSettings",
    "DFTResult",
    "DOSData",
    "HalfMetalAnalysis",
    "SpinGap",
    "analyse_spin_channels",
]
