"""The GPAW spin-DOS chain as a jobflow Maker in atomate2's style.

``GpawSpinDosMaker().make(structure)`` is one job on a pymatgen ``Structure``: the
spin-polarised SCF, the uniform non-SCF spin DOS (with site/orbital projections), then the
half-metal verdict; its output is an MSONable :class:`~smoacs_flows.dft.schema.DFTResult`
whose DOS (a pymatgen ``CompleteDos``) and eigenvalues go to the JobStore's ``data`` store.
Settings are typed dataclass fields (what :class:`~smoacs_flows.dft.gpaw_engine.GPAWSettings`
validates), so atomate2-style ``update_maker_kwargs`` powerups and ``dataclasses.replace``
work on them::

    from jobflow import run_locally
    maker = GpawSpinDosMaker(ecut=350, dense_kpoint_density=6.0)
    out = run_locally(maker.make(structure), ensure_success=True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Maker, job
from pymatgen.core import Structure

from smoacs_flows.dft import gpaw_engine
from smoacs_flows.dft.analysis import AnalysisSettings
from smoacs_flows.dft.gpaw_engine import GPAWSettings
from smoacs_flows.dft.schema import DFTResult

#: the SCF convergence fields of the Maker ↔ the keys of GPAW's ``convergence`` dict
_SCF_KEYS = {"scf_energy": "energy", "scf_density": "density", "scf_eigenstates": "eigenstates"}


@dataclass
class GpawSpinDosMaker(Maker):
    """SCF → uniform non-SCF spin DOS → verdict with GPAW, on one structure (one job).

    The defaults are :class:`GPAWSettings`' (the test/benchmark settings); every field is
    checked by it when the Maker is made (an error names the field).
    """

    name: str = "gpaw spin dos"
    xc: str = "PBE"
    ecut: float = 300.0  # plane-wave cutoff, eV
    kpoint_density: float = 3.0  # SCF k-points per Å^-1 (ASE convention, Γ-centred)
    dense_kpoint_density: float = 5.0  # non-SCF (DOS, eigenvalue gaps) k-points per Å^-1
    min_kpoints: int = 4  # at least this many k-points per direction
    smearing: float = 0.1  # Fermi-Dirac width of the SCF, eV
    scf_energy: float = 5e-4  # SCF convergence: energy, eV per valence electron
    scf_density: float = 1e-4  # SCF convergence: density change per valence electron
    scf_eigenstates: float = 1e-6  # SCF convergence: eigenstates, eV^2 per valence electron
    maxiter: int = 300  # SCF iterations
    nscf_eigenstates: float = 1e-4  # non-SCF eigenstate tolerance, eV^2 per electron
    extra_bands: int = 4  # bands above the occupied ones in the non-SCF step
    relax: bool = False  # relax positions (and the cell) with GPAW first
    relax_cell: bool = True
    fmax: float = 0.05  # eV/Å
    relax_steps: int = 60
    magmom_overrides: dict[str, float] = field(default_factory=dict)  # initial moments, μB
    dos_emin: float = -8.0  # DOS grid relative to E_F, eV
    dos_emax: float = 6.0
    dos_step: float = 0.01
    dos_method: str = "tetrahedron"  # or "gaussian:<width eV>"
    pdos: bool = True  # site- and orbital-projected DOS in the CompleteDos
    keep_gpw: bool = False  # keep the SCF density as <work_dir>/scf.gpw (~1-5 MB)
    blas_threads: int | None = 1  # BLAS threads inside the chain (None: leave as found)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    work_dir: str = "gpaw"  # GPAW's text logs, relative to the job's folder

    def __post_init__(self) -> None:
        if isinstance(self.analysis, dict):  # as a settings file gives it
            self.analysis = AnalysisSettings(**self.analysis)
        self.gpaw_settings()  # fail at make time, not on a worker

    def gpaw_settings(self) -> GPAWSettings:
        """The validated :class:`GPAWSettings` of this Maker."""
        names = set(GPAWSettings.model_fields) - {"scf_convergence"}
        kw: dict[str, Any] = {n: getattr(self, n) for n in names}
        kw["scf_convergence"] = {key: getattr(self, f) for f, key in _SCF_KEYS.items()}
        return GPAWSettings(**kw)

    @classmethod
    def from_settings(
        cls,
        gpaw: GPAWSettings | dict[str, Any] | None = None,
        analysis: AnalysisSettings | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> GpawSpinDosMaker:
        """The Maker of a campaign's ``stages.dft.gpaw`` / ``stages.dft.analysis`` dicts."""
        gs = gpaw if isinstance(gpaw, GPAWSettings) else GPAWSettings(**(gpaw or {}))
        kw = gs.model_dump(exclude={"scf_convergence"})
        defaults = GPAWSettings().scf_convergence
        for f, key in _SCF_KEYS.items():
            kw[f] = gs.scf_convergence.get(key, defaults[key])
        if analysis is not None:
            kw["analysis"] = (
                analysis if isinstance(analysis, AnalysisSettings) else AnalysisSettings(**analysis)
            )
        return cls(**kw, **kwargs)

    def with_overrides(self, overrides: dict[str, Any]) -> GpawSpinDosMaker:
        """A copy with some :class:`GPAWSettings` fields changed (validated)."""
        gs = GPAWSettings(**{**self.gpaw_settings().model_dump(), **overrides})
        keep = {"name": self.name, "analysis": self.analysis, "work_dir": self.work_dir}
        return dataclasses.replace(self.from_settings(gs), **keep)

    @job(data=["dos", "eigenvalues"])
    def make(self, structure: Structure, candidate_id: str | None = None) -> DFTResult:
        """Run the chain on ``structure``; GPAW's logs go to ``work_dir`` in the job's folder.

        ``candidate_id`` tags the result with the campaign candidate it belongs to.
        """
        result = gpaw_engine.run_gpaw(  # through the module: tests may stand in for it
            structure,
            self.gpaw_settings(),
            self.analysis,
            work_dir=Path.cwd() / self.work_dir,
        )
        result.candidate_id = candidate_id
        return result
