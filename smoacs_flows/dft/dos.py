"""pymatgen DOS objects for :class:`~smoacs_flows.dft.schema.DFTResult`.

A result's ``dos`` is a pymatgen :class:`~pymatgen.electronic_structure.dos.CompleteDos` (site-
and orbital-projected where the engine gives projections, else with empty ``pdos``) or, for old
results without a structure, a spin-resolved :class:`~pymatgen.electronic_structure.dos.Dos`.
Energies are absolute (eV) with ``efermi`` beside them, spin down positive (pymatgen's
convention; ``DosPlotter`` mirrors it).

Old stored results keep their DOS as ``{"energies", "up", "down", "method"}``
(:class:`DOSData`); :func:`to_pymatgen_dos` reads both forms and :func:`dos_data` gives the
plain per-spin arrays the analysis works on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Structure
from pymatgen.electronic_structure.core import Orbital, Spin
from pymatgen.electronic_structure.dos import CompleteDos, Dos


class DOSData(BaseModel):
    """A total DOS per spin channel on a common energy grid (absolute energies, eV).

    The array view the half-metal analysis works on, and the form old results stored."""

    energies: list[float]
    up: list[float]
    down: list[float] | None = None  # None: not spin-polarised
    method: str = Field(description="how it was computed, e.g. 'tetrahedron', 'gaussian 0.05 eV'")


def _is_old_form(obj: Any) -> bool:
    """A :class:`DOSData` or its dict (the form results stored before the pymatgen DOS)."""
    return isinstance(obj, DOSData) or (
        isinstance(obj, Mapping) and "up" in obj and "energies" in obj and "densities" not in obj
    )


def total_dos(
    energies: Sequence[float],
    up: Sequence[float],
    down: Sequence[float] | None,
    efermi: float | None,
) -> Dos:
    """A pymatgen :class:`Dos` from per-spin arrays (``down`` None: not spin-polarised)."""
    dens = {Spin.up: np.asarray(up, float)}
    if down is not None:
        dens[Spin.down] = np.asarray(down, float)
    return Dos(0.0 if efermi is None else float(efermi), np.asarray(energies, float), dens)


def to_pymatgen_dos(
    obj: Any, efermi: float | None = None, structure: Structure | Mapping | None = None
) -> Dos | None:
    """A pymatgen DOS from any stored form: a ``Dos``/``CompleteDos`` (kept), its ``as_dict``,
    or an old :class:`DOSData` (dict), which becomes a ``CompleteDos`` without projections
    when ``structure`` is given, else a ``Dos``."""
    if obj is None or isinstance(obj, Dos):
        return obj
    if _is_old_form(obj):
        d = obj if isinstance(obj, DOSData) else DOSData.model_validate(obj)
        tdos = total_dos(d.energies, d.up, d.down, efermi)
        if structure is None:
            return tdos
        if isinstance(structure, Mapping):
            structure = Structure.from_dict(structure)
        return CompleteDos(structure, tdos, {})
    if isinstance(obj, Mapping):
        data = {k: v for k, v in obj.items()}
        is_complete = data.get("@class") == "CompleteDos" or "pdos" in data
        return (CompleteDos if is_complete else Dos).from_dict(data)
    raise TypeError(f"not a DOS: {type(obj).__name__}")


def dos_as_dict(dos: Dos | None) -> dict[str, Any] | None:
    """The JSON form of a pymatgen DOS (``as_dict`` with ``@module``/``@class``)."""
    if dos is None:
        return None
    from monty.json import jsanitize

    return jsanitize(dos.as_dict(), strict=True)


def dos_data(obj: Any, method: str = "") -> DOSData | None:
    """The per-spin arrays of a DOS in any stored form (see :func:`to_pymatgen_dos`)."""
    if obj is None:
        return None
    if isinstance(obj, DOSData):
        return obj
    if _is_old_form(obj):
        return DOSData.model_validate({"method": method, **obj})
    dos = to_pymatgen_dos(obj)
    up = dos.densities.get(Spin.up)
    if up is None:
        return None
    down = dos.densities.get(Spin.down)
    return DOSData(
        energies=np.asarray(dos.energies, float).tolist(),
        up=np.asarray(up, float).tolist(),
        down=None if down is None else np.asarray(down, float).tolist(),
        method=method,
    )


def orbital(l: int, m: int) -> Orbital:  # noqa: E741 - l is the physicists' name
    """pymatgen's real orbital for GPAW's (l, m): GPAW orders p as y, z, x and d as xy, yz,
    3z²-r², zx, x²-y², the order of pymatgen's :class:`Orbital` (VASP's) within each l."""
    return Orbital(l * l + m)
