"""VASP through atomate2: the spin-resolved DOS chain, its settings, and the VASP command.

Chain (:class:`SpinDOSFlowMaker`): ``relax_static_maker`` (default ``MPGGADoubleRelaxStaticMaker``:
relax 1, relax 2, static) → carry the static's site moments onto its structure (atomate2 issue
#1377: MAGMOM is dropped otherwise) → ``dos_maker`` (default: a uniform ``NonSCFMaker`` with
ISPIN=2, LORBIT=11, ISMEAR=-5, dense mesh, fine NEDOS, CHGCAR from the static, ``auto_ispin``
off) → analysis job producing a :class:`~smoacs_flows.dft.schema.DFTResult` whose energy (and
so its hull) is the static's. DOS and band structure objects go to the JobStore's ``data``
store.

The makers are built from the campaign's ``stages.dft.vasp`` section at submit time
(:meth:`SpinDOSFlowMaker.from_settings`) and live as dataclass fields of the DFT fan-out's Maker,
so atomate2 powerups applied to the submitted Flow reach the VASP jobs the fan-out creates.
Outputs are parsed by :mod:`smoacs_flows.dft.vasp_outputs`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobflow import Flow, Maker, job
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymatgen.core import Structure

from smoacs_flows.dft.analysis import AnalysisSettings
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.dft.structures import check_structure, initial_moments
from smoacs_flows.dft.vasp_outputs import parse_vasp_output, result_from_taskdoc
from smoacs_flows.errors import SmoacsError, SpecError

__all__ = [
    "DOS_INCAR",
    "SPIN_INCAR",
    "MakerSpec",
    "SpinDOSFlowMaker",
    "VaspChainSettings",
    "analyse_vasp_dos_job",
    "carry_magmoms",
    "configured_vasp_cmd",
    "make_memory_store",
    "parse_vasp_output",
    "result_from_taskdoc",
    "run_vasp_chain",
]

#: INCAR keys forced in every stage so a magnetic candidate is never collapsed to ISPIN=1
SPIN_INCAR = {"ISPIN": 2}
#: INCAR keys forced in the DOS stage (uniform non-SCF)
DOS_INCAR = {"ISPIN": 2, "LORBIT": 11, "ISMEAR": -5, "ICHARG": 11, "NSW": 0}
#: ``user_kpoints_settings`` keys accepted from a campaign (a uniform mesh by density)
KPOINTS_KEYS = ("reciprocal_density", "grid_density", "length")
PotcarFunctional = Literal[
    "PBE", "PBE_52", "PBE_54", "PBE_64", "LDA", "LDA_52", "LDA_54", "LDA_64", "PW91", "LDA_US"
]


class MakerSpec(BaseModel):
    """A jobflow Maker by import path and keyword arguments (MSON dicts in them are decoded)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_path: str = Field(alias="class", description="module.Class or module:Class")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self, where: str) -> Maker:
        """Import and instantiate the Maker; errors name ``where`` (the campaign field)."""
        from smoacs_flows.safe_import import check_mson, import_attr, safe_decode

        # allow-listed modules only, checked before any import (the class and any @module)
        check_mson(self.kwargs, f"{where}.kwargs")
        cls = import_attr(self.class_path, f"{where}.class")
        if not (isinstance(cls, type) and issubclass(cls, Maker)):
            raise SpecError(f"{where}.class: {self.class_path} is not a jobflow Maker")
        try:
            return cls(**safe_decode(self.kwargs, f"{where}.kwargs"))
        except Exception as exc:  # noqa: BLE001 - any constructor error is a spec error
            raise SpecError(
                f"{where}.kwargs: {self.class_path} rejects them ({type(exc).__name__}: {exc})"
            ) from None


class VaspChainSettings(BaseModel):
    """The campaign's ``stages.dft.vasp`` section: inputs of every stage, makers, custodian."""

    model_config = ConfigDict(extra="forbid")

    incar: dict[str, Any] = Field(
        default_factory=dict, description="user_incar_settings of every stage (DOS guards win)"
    )
    kpoints: dict[str, float] | None = Field(
        None, description="user_kpoints_settings of the relax and static stages (one density)"
    )
    potcar_functional: PotcarFunctional | None = Field(None, description="every stage")
    magmom: Literal["mp", "high_spin"] = Field(
        "mp", description="first relaxation's MAGMOM: MPRelaxSet's table or the high-spin one"
    )
    magmom_overrides: dict[str, float] = Field(default_factory=dict)
    relax_static_maker: MakerSpec | None = None  # default MPGGADoubleRelaxStaticMaker
    dos_maker: MakerSpec | None = None  # default: uniform NonSCFMaker (MP U/POTCARs)
    reciprocal_density: float = Field(200, gt=0, description="DOS mesh, k-points per Å^-3")
    reciprocal_density_metal: float = Field(400, gt=0, description="... when metallic")
    dedos: float = Field(0.005, gt=0, description="eV per NEDOS point")
    max_errors: int = Field(5, ge=0, description="custodian max errors per job")
    wall_time: int | None = Field(None, gt=0, description="s; adds custodian's WallTimeHandler")
    vasp_cmd: str | None = None  # None: atomate2 settings (VASP_CMD / ATOMATE2_VASP_CMD)

    @field_validator("incar")
    @classmethod
    def _known_tags(cls, v: dict[str, Any]) -> dict[str, Any]:
        from pymatgen.io.vasp import Incar

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Incar({k.upper(): val for k, val in v.items()}).check_params()
        if caught:
            raise ValueError(str(caught[0].message))
        return {k.upper(): val for k, val in v.items()}

    @field_validator("kpoints")
    @classmethod
    def _one_density(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (len(v) != 1 or next(iter(v)) not in KPOINTS_KEYS):
            raise ValueError(f"give exactly one of {', '.join(KPOINTS_KEYS)}")
        return v

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "vasp") -> VaspChainSettings:
        """Validate; an error names the field (``{where}.incar: ...``) as a :class:`SpecError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise SpecError(f"{where}.{loc}: {msg}") from None

    def run_vasp_kwargs(self) -> dict[str, Any]:
        """kwargs for atomate2 ``run_vasp`` (custodian with atomate2's default handlers)."""
        kwargs: dict[str, Any] = {"max_errors": self.max_errors}
        if self.wall_time is not None:
            kwargs["wall_time"] = self.wall_time
        if self.vasp_cmd:
            kwargs["vasp_cmd"] = self.vasp_cmd
        return kwargs


def default_relax_static_maker() -> Maker:
    """MP's GGA(+U) double relaxation and static (``MPGGADoubleRelaxStaticMaker``)."""
    from atomate2.vasp.flows.mp import MPGGADoubleRelaxStaticMaker

    return MPGGADoubleRelaxStaticMaker()


def default_dos_maker(
    reciprocal_density: float = 200, reciprocal_density_metal: float = 400, dedos: float = 0.005
) -> Maker:
    """A uniform ``NonSCFMaker`` with MP GGA(+U) settings and the spin/DOS guards."""
    from atomate2.vasp.jobs.core import NonSCFMaker
    from atomate2.vasp.sets.core import NonSCFSetGenerator
    from pymatgen.io.vasp.sets import MPRelaxSet

    gen = NonSCFSetGenerator(
        mode="uniform",
        config_dict=copy.deepcopy(MPRelaxSet.CONFIG),  # same U values and POTCARs as MP
        reciprocal_density=reciprocal_density,
        reciprocal_density_metal=reciprocal_density_metal,
        dedos=dedos,
        auto_ispin=False,  # guard: never collapse a magnetic candidate to ISPIN=1
        user_incar_settings=dict(DOS_INCAR),
    )
    return NonSCFMaker(name="spin DOS uniform", input_set_generator=gen)


def vasp_job_makers(maker: Any) -> Iterator[Any]:
    """All atomate2 VASP job makers nested in ``maker`` (dataclass fields, recursively)."""
    from atomate2.vasp.jobs.base import BaseVaspMaker

    if isinstance(maker, BaseVaspMaker):
        yield maker
        return
    if dataclasses.is_dataclass(maker):
        for f in dataclasses.fields(maker):
            value = getattr(maker, f.name)
            if isinstance(value, Maker):
                yield from vasp_job_makers(value)


def _guard(maker: Maker, incar: dict[str, Any]) -> None:
    """Force ``incar`` keys and ``auto_ispin`` off in every VASP job maker of ``maker``."""
    for m in vasp_job_makers(maker):
        gen = m.input_set_generator
        gen.user_incar_settings = {**(gen.user_incar_settings or {}), **incar}
        if hasattr(gen, "auto_ispin"):
            gen.auto_ispin = False


def _apply_settings(maker: Maker, st: VaspChainSettings, scf: bool) -> None:
    """The campaign's INCAR, k-points (SCF stages), POTCAR functional and custodian settings."""
    for m in vasp_job_makers(maker):
        m.run_vasp_kwargs = {**m.run_vasp_kwargs, **st.run_vasp_kwargs()}
        gen = m.input_set_generator
        gen.user_incar_settings = {**(gen.user_incar_settings or {}), **st.incar}
        if scf and st.kpoints:
            gen.user_kpoints_settings = dict(st.kpoints)
        if st.potcar_functional:
            gen.user_potcar_functional = st.potcar_functional


def _override_magmom_table(gen: Any, overrides: dict[str, float]) -> None:
    """Per-element MAGMOM = the input set's table updated with ``overrides`` (a MAGMOM dict in
    ``user_incar_settings`` replaces the table as a whole in pymatgen, so merge it first)."""
    config = getattr(gen, "config_dict", None) or {}
    table = (config.get("INCAR") or {}).get("MAGMOM")
    uis = dict(gen.user_incar_settings or {})
    user = uis.get("MAGMOM")
    base = user if isinstance(user, dict) else table if isinstance(table, dict) else {}
    gen.user_incar_settings = {**uis, "MAGMOM": {**base, **overrides}}


@dataclass
class SpinDOSFlowMaker(Maker):
    """Relax + static → uniform spin-polarised DOS → half-metal analysis (hull: static energy).

    ``magmom`` sets the first relaxation's MAGMOM: ``mp`` leaves it to the relax maker's input
    set (MPRelaxSet's per-element table; site ``magmom`` properties of the candidate are
    dropped, ``magmom_overrides`` become a per-element MAGMOM in its INCAR); ``high_spin`` puts
    the project's high-spin table (:data:`~smoacs_flows.dft.structures.HIGH_SPIN_MOMENTS`, site
    ``magmom`` properties win) on the structure. Every VASP stage gets ISPIN=2 and ``auto_ispin``
    off; the DOS stage gets :data:`DOS_INCAR` and the static's moments as MAGMOM.
    """

    name: str = "smoacs spin DOS"
    relax_static_maker: Maker = field(default_factory=default_relax_static_maker)
    dos_maker: Maker = field(default_factory=default_dos_maker)
    magmom: str = "mp"
    magmom_overrides: dict[str, float] = field(default_factory=dict)
    analysis_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.analysis_settings, BaseModel):
            self.analysis_settings = self.analysis_settings.model_dump()
        if self.magmom not in ("mp", "high_spin"):
            raise SpecError(f"magmom: {self.magmom!r} is not one of mp, high_spin")

    @classmethod
    def from_settings(
        cls,
        settings: VaspChainSettings | dict[str, Any] | None = None,
        analysis_settings: AnalysisSettings | dict[str, Any] | None = None,
        where: str = "vasp",
    ) -> SpinDOSFlowMaker:
        """The chain with the campaign's ``stages.dft.vasp`` settings applied to its makers."""
        st = settings if isinstance(settings, VaspChainSettings) else None
        st = st or VaspChainSettings.from_dict(settings or {}, where)
        rs = (
            st.relax_static_maker.build(f"{where}.relax_static_maker")
            if st.relax_static_maker
            else default_relax_static_maker()
        )
        dos = (
            st.dos_maker.build(f"{where}.dos_maker")
            if st.dos_maker
            else default_dos_maker(st.reciprocal_density, st.reciprocal_density_metal, st.dedos)
        )
        for m, name in ((rs, "relax_static_maker"), (dos, "dos_maker")):
            if not any(True for _ in vasp_job_makers(m)):
                raise SpecError(f"{where}.{name}: {type(m).__name__} holds no atomate2 VASP job")
        _apply_settings(rs, st, scf=True)
        _apply_settings(dos, st, scf=False)
        if isinstance(analysis_settings, BaseModel):
            analysis_settings = analysis_settings.model_dump()
        return cls(
            relax_static_maker=rs,
            dos_maker=dos,
            magmom=st.magmom,
            magmom_overrides=dict(st.magmom_overrides),
            analysis_settings=dict(analysis_settings or {}),
        )

    def make(self, structure: Structure) -> Flow:
        """Build the flow for one candidate (checks the structure first)."""
        check_structure(structure)
        structure = structure.copy()
        relax_static = copy.deepcopy(self.relax_static_maker)
        dos_maker = copy.deepcopy(self.dos_maker)
        if self.magmom == "high_spin":
            structure.add_site_property("magmom", initial_moments(structure, self.magmom_overrides))
        else:
            if "magmom" in structure.site_properties:
                structure.remove_site_property("magmom")
            if self.magmom_overrides:  # per-element MAGMOM for sites without a magmom
                for m in vasp_job_makers(relax_static):
                    _override_magmom_table(m.input_set_generator, self.magmom_overrides)
        _guard(relax_static, SPIN_INCAR)
        _guard(dos_maker, DOS_INCAR)
        rs_flow = relax_static.make(structure)
        static = rs_flow.output
        carry = carry_magmoms(static.structure, static.calcs_reversed[0].output.outcar)
        kwargs: dict[str, Any] = {"prev_dir": static.dir_name}
        if "mode" in inspect.signature(dos_maker.make).parameters:
            kwargs["mode"] = "uniform"
        dos_job = dos_maker.make(carry.output, **kwargs)
        energy = {
            "stage": "static",
            "energy": static.output.energy,
            "incar": static.calcs_reversed[0].input.incar,
            "dir_name": static.dir_name,
        }
        analysis = analyse_vasp_dos_job(dos_job.output, self.analysis_settings, energy)
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
def analyse_vasp_dos_job(
    task_doc: Any, analysis_settings: dict, energy_doc: dict | None = None
) -> dict:
    """Analysis job: the DOS stage's TaskDoc → a :class:`DFTResult` dict; energy and hull
    from ``energy_doc`` (the static's ``{"energy", "incar", "dir_name"}``)."""
    result = result_from_taskdoc(
        task_doc, AnalysisSettings(**analysis_settings), energy_doc=energy_doc
    )
    return result.model_dump(mode="json")


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

    maker = SpinDOSFlowMaker.from_settings(settings, analysis_settings)
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
