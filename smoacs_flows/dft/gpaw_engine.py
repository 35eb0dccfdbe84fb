"""GPAW engine: optional relaxation, spin-polarised PBE static, dense non-SCF mesh, spin DOS.

Chain (:func:`run_gpaw`):

1. optional relaxation of positions and cell (ASE ``FrechetCellFilter`` + BFGS);
2. spin-polarised PBE SCF in plane waves (``ecut``), Γ-centred k-mesh from ``kpoint_density``
   (ASE convention: points per Å⁻¹), Fermi–Dirac smearing, ferromagnetic high-spin start;
3. non-SCF on a denser uniform Γ-centred mesh (``dense_kpoint_density``, irreducible wedge)
   with E_F fixed from the SCF: eigenvalues per spin (the per-spin gaps are decided from them)
   and a linear-tetrahedron DOS per spin, projected on sites and orbitals (PAW projectors) into
   a pymatgen ``CompleteDos`` when ``pdos`` is set;
4. total and per-site moments (PAW spheres), the half-metal analysis.

GPAW is an optional extra (``pip install smoacs-flows[gpaw]``); importing this module works
without it, running raises a clear error.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from pymatgen.core import Structure

from smoacs_flows.dft.analysis import AnalysisSettings, analyse_spin_channels
from smoacs_flows.dft.dos import orbital, total_dos
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.dft.structures import check_structure, initial_moments
from smoacs_flows.errors import SmoacsError
from smoacs_flows.strict import StrictModel

GPAW_HULL_NOTE = (
    "not comparable to MP: GPAW PAW/PBE total energies have a different reference than "
    "VASP PBE(+U) with MP2020 corrections"
)


class GPAWSettings(StrictModel):
    """Settings of the GPAW chain (the defaults are the test/benchmark settings)."""

    xc: str = Field("PBE", description="exchange-correlation functional, as GPAW names it")
    ecut: float = Field(300.0, gt=0, le=5000, description="plane-wave cutoff, eV")
    kpoint_density: float = Field(3.0, gt=0, le=50, description="SCF k-points per Å^-1 (ASE)")
    dense_kpoint_density: float = Field(5.0, gt=0, le=50, description="non-SCF k-points per Å^-1")
    min_kpoints: int = Field(
        4, ge=1, le=50, description="at least this many k-points per direction"
    )
    smearing: float = Field(0.1, gt=0, le=5, description="Fermi-Dirac width of the SCF, eV")
    scf_convergence: dict[str, float] = Field(
        default_factory=lambda: {"energy": 5e-4, "density": 1e-4, "eigenstates": 1e-6}
    )
    nscf_eigenstates: float = Field(
        1e-4, gt=0, description="non-SCF eigenstate tolerance (eV^2/electron; ~0.01 eV)"
    )
    extra_bands: int = Field(
        4, ge=2, le=1000, description="bands above the occupied ones (non-SCF)"
    )
    maxiter: int = Field(300, ge=1, le=100_000)
    relax: bool = False
    relax_cell: bool = True
    fmax: float = Field(0.05, gt=0, le=10)
    relax_steps: int = Field(60, ge=0, le=100_000)
    magmom_overrides: dict[str, float] = Field(default_factory=dict)
    dos_emin: float = Field(-8.0, description="DOS grid start relative to E_F, eV")
    dos_emax: float = Field(6.0, description="DOS grid end relative to E_F, eV")
    dos_step: float = Field(0.01, gt=0, le=1)
    dos_method: str = Field("tetrahedron", description="'tetrahedron' or 'gaussian:<width>'")
    pdos: bool = Field(
        True, description="site- and orbital-projected DOS (PAW projectors) in the CompleteDos"
    )
    keep_gpw: bool = Field(
        False,
        description="write the SCF density to <work_dir>/scf.gpw (no wave functions: about "
        "1-5 MB for a few-atom cell; its size goes into the result's settings)",
    )
    blas_threads: int | None = Field(
        1,
        ge=1,
        description="BLAS/OpenMP threads inside the GPAW chain (None: leave as found). GPAW "
        "parallelises with MPI; threaded BLAS on its small matrices is slower (zinc-blende "
        "CrAs at the demo settings: 11 s with 1 thread, 53 s wall / 102 s CPU with 2)",
    )

    @field_validator("xc")
    @classmethod
    def _known_functional(cls, v: str) -> str:
        """GPAW's own functional lookup decides (LDA, PBE, RPBE, revPBE, PBEsol, libxc names)."""
        try:
            from gpaw.xc import XC

            XC(v)
        except ImportError:  # checked again where GPAW runs
            return v
        except Exception:  # noqa: BLE001 - GPAW raises several kinds for an unknown name
            raise ValueError(
                f"{v!r} is not a functional GPAW knows (e.g. LDA, PBE, RPBE, revPBE, PBEsol)"
            ) from None
        return v


def kpoint_mesh(structure: Structure, density: float, minimum: int = 1) -> tuple[int, int, int]:
    """Γ-centred mesh with ``density`` points per Å⁻¹ along each reciprocal vector (2π incl.)."""
    recip = structure.lattice.reciprocal_lattice.abc  # includes 2π
    return tuple(max(minimum, math.ceil(density * b - 1e-6)) for b in recip)


def _import_gpaw():
    try:
        import gpaw  # noqa: F401
    except ImportError as exc:
        raise SmoacsError(
            "GPAW is not installed: apt-get install libxc-dev libopenblas-dev libfftw3-dev, "
            "then CC=g++ pip install 'smoacs-flows[gpaw]' (make test / make demo do this)"
        ) from exc


def run_gpaw(
    structure: Structure,
    settings: GPAWSettings | None = None,
    analysis_settings: AnalysisSettings | None = None,
    work_dir: str | Path | None = None,
) -> DFTResult:
    """Run the GPAW chain on one structure and return the analysed :class:`DFTResult`.

    ``work_dir`` receives the GPAW text logs (``scf.txt``, ``nscf.txt``, ``relax.txt``);
    None keeps them quiet.
    """
    settings = settings or GPAWSettings()
    analysis_settings = analysis_settings or AnalysisSettings()
    check_structure(structure)
    _import_gpaw()
    if settings.blas_threads is None:
        return _run_chain(structure, settings, analysis_settings, work_dir)
    from threadpoolctl import threadpool_limits

    # after the import, so GPAW's own BLAS library is among those limited
    with threadpool_limits(limits=settings.blas_threads):
        return _run_chain(structure, settings, analysis_settings, work_dir)


#: GPAW warns "Results may be wrong!" for cell angles outside this range (gpaw.new.builder)
GPAW_ANGLES = (40.0, 140.0)


def gpaw_cell(structure: Structure) -> Structure:
    """The cell GPAW computes: ``structure`` itself, or its Niggli-reduced cell (the same
    crystal; angles within 60-120 degrees) when an angle is outside GPAW's trusted
    40-140 degrees, e.g. the primitive standard cell of a rhombohedral lattice."""
    lo, hi = GPAW_ANGLES
    if all(lo < a < hi for a in structure.lattice.angles):
        return structure
    return structure.get_reduced_structure("niggli")


def _run_chain(
    structure: Structure,
    settings: GPAWSettings,
    analysis_settings: AnalysisSettings,
    work_dir: str | Path | None,
) -> DFTResult:
    """The GPAW chain itself (relaxation if asked, SCF, non-SCF, DOS, analysis)."""
    logs: list[Any] = []

    def txt(name: str) -> Any:
        # log files we open and close ourselves: GPAW closes the ones it opens in a
        # destructor, which on a full disk prints a traceback after our one error line
        if work_dir is None:
            return None
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        fh = open(Path(work_dir) / name, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        logs.append(fh)
        return fh

    try:
        return _chain_steps(structure, settings, analysis_settings, txt, work_dir)
    finally:
        for fh in logs:
            with contextlib.suppress(OSError):
                fh.close()


def _chain_steps(
    structure: Structure,
    settings: GPAWSettings,
    analysis_settings: AnalysisSettings,
    txt: Any,
    work_dir: str | Path | None,
) -> DFTResult:
    """Relaxation (if asked), SCF, non-SCF and DOS; ``txt(name)`` gives a log file object."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from gpaw import GPAW, PW, FermiDirac
    from gpaw.dos import DOSCalculator
    from pymatgen.electronic_structure.dos import CompleteDos
    from pymatgen.io.ase import AseAtomsAdaptor

    timings: dict[str, float] = {}
    structure = gpaw_cell(structure)
    bare = Structure(structure.lattice, structure.species, structure.frac_coords)
    atoms = AseAtomsAdaptor.get_atoms(bare)
    atoms.set_initial_magnetic_moments(initial_moments(structure, settings.magmom_overrides))
    kpts = kpoint_mesh(structure, settings.kpoint_density, settings.min_kpoints)

    def scf_calc(name: str) -> Any:
        return GPAW(
            mode=PW(settings.ecut),
            xc=settings.xc,
            kpts={"size": kpts, "gamma": True},
            occupations=FermiDirac(settings.smearing),
            convergence=dict(settings.scf_convergence),
            maxiter=settings.maxiter,
            txt=txt(name),
        )

    if settings.relax:
        t0 = time.perf_counter()
        atoms.calc = scf_calc("relax.txt")
        target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
        opt = BFGS(target, logfile=txt("relax.log"))
        converged = opt.run(fmax=settings.fmax, steps=settings.relax_steps)
        timings["relax"] = time.perf_counter() - t0
        if not converged:
            raise SmoacsError(
                f"GPAW relaxation did not reach fmax={settings.fmax} eV/Å in "
                f"{settings.relax_steps} steps"
            )
        structure = AseAtomsAdaptor.get_structure(atoms)
        check_structure(structure, name="relaxed structure")
        moments = atoms.get_magnetic_moments()
        atoms = atoms.copy()
        atoms.set_initial_magnetic_moments(moments)

    t0 = time.perf_counter()
    calc = scf_calc("scf.txt")
    atoms.calc = calc
    try:
        energy = float(atoms.get_potential_energy())
    except Exception as exc:  # GPAW raises its own KohnShamConvergenceError etc.
        raise SmoacsError(
            f"GPAW SCF failed for {structure.composition.reduced_formula}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    timings["scf"] = time.perf_counter() - t0
    efermi = float(calc.get_fermi_level())
    total_moment = float(calc.get_magnetic_moment())
    site_moments = [float(m) for m in calc.get_magnetic_moments()]
    nspins = calc.get_number_of_spins()

    # dense uniform non-SCF with E_F fixed from the SCF
    t0 = time.perf_counter()
    dense = kpoint_mesh(structure, settings.dense_kpoint_density, settings.min_kpoints)
    nvalence = float(calc.dft.density.nvalence)
    nbands = int(math.ceil((nvalence + abs(total_moment)) / 2)) + settings.extra_bands
    nscf = calc.fixed_density(
        kpts={"size": dense, "gamma": True},
        nbands=nbands,
        convergence={"bands": nbands - 1, "eigenstates": settings.nscf_eigenstates},
        txt=txt("nscf.txt"),
    )
    nscf.get_potential_energy()
    timings["nscf"] = time.perf_counter() - t0
    n_ibz = len(nscf.get_ibz_k_points())
    weights = [float(w) for w in nscf.get_k_point_weights()]
    spins = ("up", "down")[:nspins]
    eigenvalues = {
        name: [nscf.get_eigenvalues(kpt=k, spin=s).tolist() for k in range(n_ibz)]
        for s, name in enumerate(spins)
    }
    # DOS per spin channel (states/eV/cell), absolute energies
    rel = np.arange(settings.dos_emin, settings.dos_emax + 1e-9, settings.dos_step)
    doscalc = DOSCalculator.from_calculator(nscf)
    if settings.dos_method == "tetrahedron":
        width, method = 0.0, f"linear tetrahedron on {dense[0]}x{dense[1]}x{dense[2]}"
    elif settings.dos_method.startswith("gaussian:"):
        width = float(settings.dos_method.split(":", 1)[1])
        method = f"gaussian {width} eV on {dense[0]}x{dense[1]}x{dense[2]}"
    else:
        raise SmoacsError(f"dos_method: unknown method {settings.dos_method!r}")
    dens = [np.asarray(doscalc.raw_dos(rel, spin=s, width=width)) for s in range(nspins)]
    tdos = total_dos(rel + efermi, dens[0], dens[1] if nspins == 2 else None, efermi)
    pdos = _projected_dos(doscalc, structure, rel, nspins, width) if settings.pdos else {}
    dos = CompleteDos(structure, tdos, pdos)
    gpw: dict[str, Any] = {}
    if settings.keep_gpw and work_dir is not None:
        path = Path(work_dir) / "scf.gpw"
        calc.write(str(path))  # density and potentials, no wave functions
        gpw = {"gpw_file": str(path), "gpw_size_bytes": path.stat().st_size}

    factor = structure.composition.get_reduced_composition_and_factor()[1]
    final = structure.copy()
    final.add_site_property("magmom", site_moments)
    run_settings = settings.model_dump()
    run_settings.update(
        scf_kpts=list(kpts),
        nscf_kpts=list(dense),
        nscf_ibz_kpoints=n_ibz,
        nbands_nscf=nbands,
        **gpw,
    )
    result = DFTResult(
        engine="gpaw",
        settings=run_settings,
        structure=final.as_dict(),
        formula=structure.composition.formula,
        reduced_formula=structure.composition.reduced_formula,
        n_formula_units=float(factor),
        energy=energy,
        energy_per_atom=energy / len(structure),
        efermi=efermi,
        spin_polarised=nspins == 2,
        total_moment=total_moment,
        moment_per_fu=total_moment / factor,
        site_moments=site_moments,
        dos=dos,
        dos_method=method,
        eigenvalues=eigenvalues,
        kpoint_weights=weights,
        hull={"comparable_to_mp": False, "e_above_hull": None, "note": GPAW_HULL_NOTE},
        timings=timings,
    )
    result.analysis = analyse_spin_channels(
        efermi,
        eigenvalues=eigenvalues,
        dos=dos,
        total_moment=total_moment,
        n_formula_units=factor,
        site_moments=site_moments,
        n_kpoints=n_ibz,
        settings=analysis_settings,
    )
    return result


def _projected_dos(
    doscalc: Any, structure: Structure, rel: np.ndarray, nspins: int, width: float
) -> dict[Any, dict[Any, dict[Any, np.ndarray]]]:
    """Site- and orbital-projected DOS ``{site: {Orbital: {Spin: densities}}}`` from the PAW
    projectors of each atom (every l its setup has, every m), on the total DOS's grid."""
    from pymatgen.electronic_structure.core import Spin

    spins = (Spin.up, Spin.down)[:nspins]
    out: dict[Any, dict[Any, dict[Any, np.ndarray]]] = {}
    for a, site in enumerate(structure):
        ls = sorted(set(doscalc.setups[a].l_j))
        out[site] = {
            orbital(l, m): {
                spin: np.asarray(doscalc.raw_pdos(rel, a, l, m, spin=s, width=width))
                for s, spin in enumerate(spins)
            }
            for l in ls  # noqa: E741 - the angular momentum
            for m in range(2 * l + 1)
        }
    return out
