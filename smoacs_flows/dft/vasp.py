"""VASP through atomate2: the spin-resolved DOS chain and parsing of existing VASP outputs.

Chain (:class:`SpinDOSFlowMaker`): ``MPGGADoubleRelaxStaticMaker`` (relax 1, relax 2, static)
→ carry the static's site moments onto its structure (atomate2 issue #1377: MAGMOM is dropped
otherwise) → uniform non-SCF (``NonSCFMaker``: ISPIN=2, LORBIT=11, ISMEAR=-5, dense mesh, fine
NEDOS, CHGCAR from the static, ``auto_ispin`` off) → analysis job producing a
:class:`~smoacs_flows.dft.schema.DFTResult`. DOS and band structure objects go to the JobStore's
``data`` store (atomate2 puts them there; the analysis job puts its DOS arrays there too).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Flow, Maker, job
from pymatgen.core import Structure
from pymatgen.electronic_structure.core import Spin

from smoacs_flows.dft.analysis import AnalysisSettings, analyse_spin_channels
from smoacs_flows.dft.schema import DFTResult, DOSData
from smoacs_flows.dft.structures import check_structure, initial_moments
from smoacs_flows.errors import InputError, SmoacsError

logger = logging.getLogger(__name__)

#: INCAR keys forced in every stage so a magnetic candidate is never collapsed to ISPIN=1
SPIN_INCAR = {"ISPIN": 2}
#: INCAR keys forced in the DOS stage (uniform non-SCF)
DOS_INCAR = {"ISPIN": 2, "LORBIT": 11, "ISMEAR": -5, "ICHARG": 11, "NSW": 0}


@dataclass
class VaspChainSettings:
    """Settings of the VASP chain (custodian, VASP command, DOS mesh)."""

    reciprocal_density: float = 200  # uniform non-SCF k-points per Å^-3 (gapped systems)
    reciprocal_density_metal: float = 400  # ... when the static is metallic
    dedos: float = 0.005  # eV per NEDOS point over the energy range
    max_errors: int = 5  # custodian max errors per job
    wall_time: int | None = None  # seconds; adds custodian's WallTimeHandler
    vasp_cmd: str | None = None  # None: atomate2 settings (VASP_CMD / ATOMATE2_VASP_CMD)
    magmom_overrides: dict[str, float] = field(default_factory=dict)

    def run_vasp_kwargs(self) -> dict[str, Any]:
        """kwargs for atomate2 ``run_vasp`` (custodian with atomate2's default handlers)."""
        kwargs: dict[str, Any] = {"max_errors": self.max_errors}
        if self.wall_time is not None:
            kwargs["wall_time"] = self.wall_time
        if self.vasp_cmd:
            kwargs["vasp_cmd"] = self.vasp_cmd
        return kwargs


def _mp_nscf_maker(settings: VaspChainSettings) -> Maker:
    """A uniform ``NonSCFMaker`` with MP GGA(+U) settings and the spin guards."""
    from atomate2.vasp.jobs.core import NonSCFMaker
    from atomate2.vasp.sets.core import NonSCFSetGenerator
    from pymatgen.io.vasp.sets import MPRelaxSet

    gen = NonSCFSetGenerator(
        mode="uniform",
        config_dict=copy.deepcopy(MPRelaxSet.CONFIG),  # same U values and POTCARs as MP
        reciprocal_density=settings.reciprocal_density,
        reciprocal_density_metal=settings.reciprocal_density_metal,
        dedos=settings.dedos,
        auto_ispin=False,  # guard: never collapse a magnetic candidate to ISPIN=1
        user_incar_settings=dict(DOS_INCAR),
    )
    return NonSCFMaker(name="spin DOS uniform", input_set_generator=gen)


def _vasp_makers(maker: Any) -> Iterator[Any]:
    """All atomate2 VASP job makers nested in ``maker`` (dataclass fields, recursively)."""
    from atomate2.vasp.jobs.base import BaseVaspMaker

    if isinstance(maker, BaseVaspMaker):
        yield maker
        return
    if dataclasses.is_dataclass(maker):
        for f in dataclasses.fields(maker):
            value = getattr(maker, f.name)
            if isinstance(value, Maker):
                yield from _vasp_makers(value)


def _default_relax_static() -> Maker:
    from atomate2.vasp.flows.mp import MPGGADoubleRelaxStaticMaker

    return MPGGADoubleRelaxStaticMaker()


@dataclass
class SpinDOSFlowMaker(Maker):
    """MP double relax + static → uniform spin-polarised DOS → half-metal analysis.

    Every VASP stage gets ISPIN=2 and custodian settings from ``settings``; the first relax
    starts from high-spin moments (site ``magmom`` properties win); the DOS stage gets the
    static's moments as MAGMOM.
    """

    name: str = "smoacs spin DOS"
    settings: VaspChainSettings = field(default_factory=VaspChainSettings)
    analysis_settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    relax_static_maker: Maker = field(default_factory=_default_relax_static)
    dos_maker: Maker | None = None  # default: _mp_nscf_maker(settings)

    def make(self, structure: Structure) -> Flow:
        """Build the flow for one candidate (checks the structure first)."""
        check_structure(structure)
        structure = structure.copy()
        structure.add_site_property(
            "magmom", initial_moments(structure, self.settings.magmom_overrides)
        )
        relax_static = copy.deepcopy(self.relax_static_maker)
        dos_maker = copy.deepcopy(self.dos_maker) or _mp_nscf_maker(self.settings)
        for m in [*_vasp_makers(relax_static), *_vasp_makers(dos_maker)]:
            m.run_vasp_kwargs = {**m.run_vasp_kwargs, **self.settings.run_vasp_kwargs()}
            gen = m.input_set_generator
            gen.user_incar_settings = {**(gen.user_incar_settings or {}), **SPIN_INCAR}
            if hasattr(gen, "auto_ispin"):
                gen.auto_ispin = False
        rs_flow = relax_static.make(structure)
        static = rs_flow.output
        carry = carry_magmoms(static.structure, static.calcs_reversed[0].output.outcar)
        dos_job = dos_maker.make(carry.output, prev_dir=static.dir_name, mode="uniform")
        analysis = analyse_vasp_dos_job(dos_job.output, self.analysis_settings.model_dump())
        return Flow([rs_flow, carry, dos_job, analysis], output=analysis.output, name=self.name)


@job
def carry_magmoms(structure: Structure, outcar: dict | None) -> Structure:
    """The static's structure with its OUTCAR site moments as ``magmom`` (for the DOS stage)."""
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    structure = structure.copy()
    mags = (outcar or {}).get("magnetization") or []
    if len(mags) == len(structure):
        structure.add_site_property("magmom", [float(m["tot"]) for m in mags])
    elif "magmom" not in structure.site_properties:
        raise SmoacsError(
            "static calculation has no site magnetisation in OUTCAR; cannot carry MAGMOM"
        )
    return structure


@job(data=["dos", "eigenvalues"])
def analyse_vasp_dos_job(task_doc: Any, analysis_settings: dict) -> dict:
    """Analysis job: the DOS stage's TaskDoc → a :class:`DFTResult` dict."""
    result = result_from_taskdoc(task_doc, AnalysisSettings(**analysis_settings))
    return result.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Turning VASP outputs into a DFTResult


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or key access (TaskDocs arrive as models or as dicts)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _dos_arrays(dos: Any) -> DOSData | None:
    """A pymatgen Dos/CompleteDos (or its dict) → DOSData."""
    if dos is None:
        return None
    if isinstance(dos, dict):
        from pymatgen.electronic_structure.dos import CompleteDos, Dos

        dos = (CompleteDos if "pdos" in dos else Dos).from_dict(dos)
    up = dos.densities.get(Spin.up)
    down = dos.densities.get(Spin.down)
    if up is None:
        return None
    return DOSData(
        energies=np.asarray(dos.energies, float).tolist(),
        up=np.asarray(up, float).tolist(),
        down=None if down is None else np.asarray(down, float).tolist(),
        method="vasp",
    )


def _eigenvalues_from_bs(bs: Any) -> dict[str, list] | None:
    """BandStructure (or dict) → {"up": [k][band], "down": ...}."""
    if bs is None:
        return None
    if isinstance(bs, dict):
        from pymatgen.electronic_structure.bandstructure import BandStructure

        bs = BandStructure.from_dict(bs)
    out = {}
    for spin, name in ((Spin.up, "up"), (Spin.down, "down")):
        if spin in bs.bands:
            out[name] = np.asarray(bs.bands[spin], float).T.tolist()
    return out


def _finish(result: DFTResult, settings: AnalysisSettings) -> DFTResult:
    """Attach the half-metal analysis to a result."""
    n_k = len(result.eigenvalues["up"]) if result.eigenvalues else None
    result.analysis = analyse_spin_channels(
        result.efermi,
        eigenvalues=result.eigenvalues if result.spin_polarised else None,
        dos=result.dos if result.spin_polarised else None,
        total_moment=result.total_moment,
        n_formula_units=result.n_formula_units,
        site_moments=result.site_moments,
        n_kpoints=n_k,
        settings=settings,
    )
    return result


def result_from_taskdoc(
    task_doc: Any, settings: AnalysisSettings | None = None, source: str | None = None
) -> DFTResult:
    """An atomate2/emmet ``TaskDoc`` (model or dict) → analysed :class:`DFTResult`."""
    settings = settings or AnalysisSettings()
    calc = _get(task_doc, "calcs_reversed")[0]
    calc_in, calc_out = _get(calc, "input"), _get(calc, "output")
    params = _get(calc_in, "parameters") or {}
    incar = _get(calc_in, "incar") or {}
    ispin = int(params.get("ISPIN", incar.get("ISPIN", 1)))
    output = _get(task_doc, "output")
    structure = _get(output, "structure") or _get(calc_out, "structure")
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    outcar = _get(calc_out, "outcar") or {}
    mags = outcar.get("magnetization") or []
    site_moments = [float(m["tot"]) for m in mags] if len(mags) == len(structure) else None
    total = outcar.get("total_magnetization")
    vobj = _get(task_doc, "vasp_objects") or {}
    vobj = {str(getattr(k, "value", k)): v for k, v in vobj.items()}
    eig = _eigenvalues_from_bs(vobj.get("bandstructure"))
    if total is None and ispin == 2:
        total = _moment_from_dos(_dos_arrays(vobj.get("dos")), _get(calc_out, "efermi"))
    return _build_result(
        structure=structure,
        energy=_get(output, "energy"),
        efermi=_get(calc_out, "efermi"),
        ispin=ispin,
        total_moment=total,
        site_moments=site_moments,
        dos=_dos_arrays(vobj.get("dos")),
        eigenvalues=eig,
        incar=dict(incar),
        source=source or _get(task_doc, "dir_name"),
        parser="atomate2/emmet TaskDoc",
        settings=settings,
    )


def _moment_from_dos(dos: DOSData | None, efermi: float | None) -> float | None:
    """Total moment (μB/cell) from integrating N_up - N_down up to E_F."""
    if dos is None or dos.down is None or efermi is None:
        return None
    e = np.asarray(dos.energies)
    m = e <= efermi
    diff = np.asarray(dos.up)[m] - np.asarray(dos.down)[m]
    return float(np.trapezoid(diff, e[m]))


def _build_result(
    *,
    structure: Structure,
    energy: float | None,
    efermi: float | None,
    ispin: int,
    total_moment: float | None,
    site_moments: list[float] | None,
    dos: DOSData | None,
    eigenvalues: dict | None,
    incar: dict,
    source: str | None,
    parser: str,
    settings: AnalysisSettings,
) -> DFTResult:
    factor = structure.composition.get_reduced_composition_and_factor()[1]
    spin_pol = ispin == 2
    incar_json = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in incar.items()}
    result = DFTResult(
        engine="vasp",
        settings={"parser": parser, "incar": incar_json},
        source=source,
        structure=structure.as_dict(),
        formula=structure.composition.formula,
        reduced_formula=structure.composition.reduced_formula,
        n_formula_units=float(factor),
        energy=None if energy is None else float(energy),
        energy_per_atom=None if energy is None else float(energy) / len(structure),
        efermi=None if efermi is None else float(efermi),
        spin_polarised=spin_pol,
        total_moment=None if total_moment is None else float(total_moment),
        moment_per_fu=None if total_moment is None else float(total_moment) / factor,
        site_moments=site_moments,
        dos=dos,
        eigenvalues=eigenvalues,
    )
    result.hull = _hull_or_note(result)
    return _finish(result, settings)


def _hull_or_note(result: DFTResult) -> dict[str, Any]:
    """DFT hull against the screening reference store; a failure becomes a note, not an error."""
    from smoacs_flows.dft.hull import dft_hull

    if result.energy is None:
        return {"comparable_to_mp": False, "e_above_hull": None, "note": "no energy"}
    try:
        return dft_hull(result)
    except Exception as exc:  # the reference store is optional here
        return {
            "comparable_to_mp": True,
            "e_above_hull": None,
            "note": f"reference store unavailable ({type(exc).__name__}: {exc})",
        }


def _zpath(directory: Path, name: str) -> Path | None:
    for cand in (name, name + ".gz", name + ".bz2", name + ".xz"):
        if (directory / cand).is_file():
            return directory / cand
    return None


def parse_vasp_output(path: str | Path, settings: AnalysisSettings | None = None) -> DFTResult:
    """Parse a VASP directory or ``vasprun.xml[.gz]`` into an analysed :class:`DFTResult`.

    With OUTCAR and CONTCAR beside vasprun.xml the directory goes through atomate2's own
    ``TaskDoc.from_directory`` (emmet); otherwise through pymatgen's ``Vasprun`` (moments then
    come from occupations). ISPIN=1 gives the ``not_spin_polarised`` verdict.
    """
    from pymatgen.io.vasp import Vasprun

    settings = settings or AnalysisSettings()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        directory, vasprun = path, _zpath(path, "vasprun.xml")
        if vasprun is None:
            raise InputError(f"{path}: no vasprun.xml or vasprun.xml.gz in this VASP directory")
    else:
        directory, vasprun = path.parent, path
        if not path.name.startswith("vasprun.xml"):
            raise InputError(f"{path}: expected a VASP directory or a vasprun.xml[.gz] file")
    if (
        _zpath(directory, "OUTCAR")
        and _zpath(directory, "CONTCAR")
        and (vasprun.name.startswith("vasprun.xml") and vasprun == _zpath(directory, "vasprun.xml"))
    ):
        from emmet.core.tasks import TaskDoc

        try:
            td = TaskDoc.from_directory(directory, parse_dos=True, parse_bandstructure=True)
        except Exception as exc:
            raise InputError(
                f"{directory}: atomate2/emmet cannot parse this VASP run ({exc})"
            ) from None
        return result_from_taskdoc(td, settings, source=str(directory))
    try:
        vr = Vasprun(str(vasprun), parse_potcar_file=False, parse_projected_eigen=False)
    except Exception as exc:
        raise InputError(f"{vasprun}: not a readable vasprun.xml ({exc})") from None
    ispin = int(vr.parameters.get("ISPIN", 1))
    eig = {}
    total = None
    for spin, name in ((Spin.up, "up"), (Spin.down, "down")):
        if spin in vr.eigenvalues:
            eig[name] = np.asarray(vr.eigenvalues[spin][..., 0], float).tolist()
    if ispin == 2 and Spin.down in vr.eigenvalues:
        w = np.asarray(vr.actual_kpoints_weights, float)
        occ_up = vr.eigenvalues[Spin.up][..., 1].sum(axis=1)
        occ_dn = vr.eigenvalues[Spin.down][..., 1].sum(axis=1)
        total = float(np.sum(w * (occ_up - occ_dn)) / np.sum(w))
    return _build_result(
        structure=vr.final_structure,
        energy=vr.final_energy,
        efermi=vr.efermi,
        ispin=ispin,
        total_moment=total,
        site_moments=None,
        dos=_dos_arrays(vr.tdos),
        eigenvalues=eig or None,
        incar=dict(vr.incar),
        source=str(vasprun),
        parser="pymatgen Vasprun (no OUTCAR/CONTCAR: moments from occupations)",
        settings=settings,
    )


# ---------------------------------------------------------------------------------------------
# Configuration


def configured_vasp_cmd(explicit: str | None = None) -> str:
    """The VASP command to run, or an error that says how to configure one.

    Order: ``explicit`` (``--vasp-cmd``), env ``ATOMATE2_VASP_CMD``, atomate2 settings
    (``VASP_CMD`` in ``~/.atomate2.yaml`` or ``$ATOMATE2_CONFIG_FILE``). The executable must be
    on PATH.
    """
    from atomate2 import SETTINGS

    cmd = explicit or os.environ.get("ATOMATE2_VASP_CMD") or SETTINGS.VASP_CMD
    exe = (cmd or "").split()
    found = [w for w in exe if shutil.which(os.path.expandvars(w)) and "vasp" in w.lower()]
    if not exe or not found:
        raise SmoacsError(
            f"VASP command {cmd!r} not found. Configure it with `--vasp-cmd 'srun vasp_std'`, "
            "the environment variable ATOMATE2_VASP_CMD, or VASP_CMD in ~/.atomate2.yaml "
            "(atomate2 settings); POTCARs need PMG_VASP_PSP_DIR in ~/.config/.pmgrc.yaml. "
            "Without VASP use --engine gpaw."
        )
    return cmd


def make_memory_store():
    """An in-memory JobStore with the ``data`` additional store (DOS objects go there)."""
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def run_vasp_chain(
    structure: Structure,
    work_dir: str | Path,
    settings: VaspChainSettings | None = None,
    analysis_settings: AnalysisSettings | None = None,
    store: Any = None,
) -> DFTResult:
    """Run :class:`SpinDOSFlowMaker` locally (jobflow ``run_locally``) and return the result."""
    from jobflow import run_locally

    settings = settings or VaspChainSettings()
    maker = SpinDOSFlowMaker(
        settings=settings, analysis_settings=analysis_settings or AnalysisSettings()
    )
    flow = maker.make(structure)
    store = store or make_memory_store()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        responses = run_locally(
            flow, store=store, create_folders=True, root_dir=work_dir, ensure_success=True
        )
    except RuntimeError as exc:  # jobflow: "Flow did not finish running successfully"
        raise SmoacsError(f"VASP flow failed ({exc}); job folders under {work_dir}") from exc
    out = responses[flow.jobs[-1].uuid][1].output
    return DFTResult.model_validate(out)
