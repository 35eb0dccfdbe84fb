"""VASP outputs → :class:`~smoacs_flows.dft.schema.DFTResult`: atomate2/emmet TaskDocs (from a
jobflow run or a VASP directory) and bare ``vasprun.xml`` files, with the half-metal analysis and
the DFT hull attached.

The energy that enters the hull is the one of ``energy_doc`` when given (the chain passes its
SCF static: a non-SCF DOS run's total energy is not a thermodynamic energy), else the parsed
run's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.electronic_structure.core import Spin

from smoacs_flows.dft.analysis import AnalysisSettings, analyse_spin_channels
from smoacs_flows.dft.dos import DOSData, dos_data, to_pymatgen_dos
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.errors import InputError

# ---------------------------------------------------------------------------------------------
# Turning VASP outputs into a DFTResult


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or key access (TaskDocs arrive as models or as dicts)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _pmg_dos(dos: Any) -> Any:
    """A pymatgen Dos/CompleteDos (or its dict) → the object (None without a spin-up DOS)."""
    dos = to_pymatgen_dos(dos)
    if dos is None or dos.densities.get(Spin.up) is None:
        return None
    return dos


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
    task_doc: Any,
    settings: AnalysisSettings | None = None,
    source: str | None = None,
    energy_doc: dict[str, Any] | None = None,
) -> DFTResult:
    """An atomate2/emmet ``TaskDoc`` (model or dict) → analysed :class:`DFTResult`.

    ``energy_doc`` (``{"energy", "incar", "dir_name"}`` of the chain's SCF static) gives the
    energy and the INCAR the hull uses; the DOS, eigenvalues and moments stay ``task_doc``'s.
    """
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
        total = _moment_from_dos(dos_data(vobj.get("dos")), _get(calc_out, "efermi"))
    energy = _get(output, "energy")
    energy_from = None
    if energy_doc is not None:
        if energy_doc.get("energy") is None:
            raise InputError("the static calculation has no energy; cannot place it on a hull")
        energy = energy_doc["energy"]
        energy_from = {
            "stage": energy_doc.get("stage", "static"),
            "dir_name": energy_doc.get("dir_name"),
            "incar": _json_incar(dict(energy_doc.get("incar") or {})),
        }
    return _build_result(
        structure=structure,
        energy=energy,
        energy_from=energy_from,
        efermi=_get(calc_out, "efermi"),
        ispin=ispin,
        total_moment=total,
        site_moments=site_moments,
        dos=_pmg_dos(vobj.get("dos")),
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


def _json_incar(incar: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in incar.items()}


def _build_result(
    *,
    structure: Structure,
    energy: float | None,
    efermi: float | None,
    ispin: int,
    total_moment: float | None,
    site_moments: list[float] | None,
    dos: Any,
    eigenvalues: dict | None,
    incar: dict,
    source: str | None,
    parser: str,
    settings: AnalysisSettings,
    energy_from: dict[str, Any] | None = None,
) -> DFTResult:
    factor = structure.composition.get_reduced_composition_and_factor()[1]
    spin_pol = ispin == 2
    meta: dict[str, Any] = {"parser": parser, "incar": _json_incar(incar)}
    if energy_from is not None:
        meta["energy_from"] = energy_from
    result = DFTResult(
        engine="vasp",
        settings=meta,
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
        dos_method=None if dos is None else "vasp",
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
        dos=_pmg_dos(vr.complete_dos),
        eigenvalues=eig or None,
        incar=dict(vr.incar),
        source=str(vasprun),
        parser="pymatgen Vasprun (no OUTCAR/CONTCAR: moments from occupations)",
        settings=settings,
    )
