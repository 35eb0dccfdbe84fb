"""One result schema for both DFT engines (VASP via atomate2, GPAW).

A :class:`DFTResult` is MSONable (``as_dict``/``from_dict`` with ``@module``/``@class``, so
monty's ``dumpfn``/``loadfn`` and jobflow round-trip it) and plain JSON
(``model_dump(mode="json")``): energies in eV, moments in μB, energies of the DOS and
eigenvalues absolute (not shifted), with ``efermi`` beside them. Its ``dos`` is a pymatgen
``CompleteDos`` (see :mod:`smoacs_flows.dft.dos`). Candidate records carry it under ``dft``
(see docs/architecture.md); results stored in the older form (``dos`` as per-spin arrays, an
optional ``complete_dos``) are read as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from smoacs_flows.dft.dos import DOSData, dos_as_dict, dos_data, to_pymatgen_dos
from smoacs_flows.errors import InputError
from smoacs_flows.io import atomic_write_bytes

SCHEMA_VERSION = 2  # 2: dos a pymatgen CompleteDos, dos_method, candidate_id

Verdict = Literal[
    "half_metal",
    "near_half_metal",
    "magnetic_metal",
    "nonmagnetic_metal",
    "semiconductor",
    "not_spin_polarised",
]


__all__ = ["DOSData", "DFTResult", "HalfMetalAnalysis", "MSONableModel", "SpinGap", "Verdict"]


class MSONableModel(BaseModel):
    """A pydantic model with monty's MSONable protocol: ``as_dict`` (JSON-ready, with
    ``@module``/``@class``) and ``from_dict``, so ``dumpfn``/``loadfn``, jobflow and MSONable
    Makers holding it round-trip it."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form with ``@module``/``@class`` (what ``MontyDecoder`` dispatches on)."""
        cls = type(self)
        return {"@module": cls.__module__, "@class": cls.__name__, **self.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """The model from :meth:`as_dict` (``@`` keys ignored)."""
        return cls.model_validate({k: v for k, v in d.items() if not k.startswith("@")})


#: a pymatgen Dos/CompleteDos field: read from any stored form, written as its ``as_dict``
PymatgenDos = Annotated[
    Any,
    BeforeValidator(lambda v: to_pymatgen_dos(v)),
    PlainSerializer(dos_as_dict),
]


class SpinGap(MSONableModel):
    """The band gap of one spin channel around E_F, decided from eigenvalues (or DOS)."""

    spin: Literal["up", "down"]
    gapped: bool
    vbm: float | None = None  # highest eigenvalue below E_F (eV, absolute)
    cbm: float | None = None  # lowest eigenvalue above E_F (eV, absolute)
    gap: float | None = None  # cbm - vbm when gapped, else None
    source: Literal["eigenvalues", "dos"]
    reason: str = ""  # why the channel is (not) gapped, in words


class HalfMetalAnalysis(MSONableModel):
    """The half-metal analysis of a spin-resolved calculation."""

    verdict: Verdict
    spin_polarised: bool
    efermi: float | None = None
    dos_at_ef: dict[str, float | None] = Field(default_factory=dict)  # states/eV/cell per spin
    polarisation: float | None = None  # P = (N_up - N_down) / (N_up + N_down) at E_F
    gaps: dict[str, SpinGap] = Field(default_factory=dict)
    gapped_channel: Literal["up", "down"] | None = None
    half_metallic_gap: float | None = None  # min(CBM - E_F, E_F - VBM) of the gapped channel
    moment_per_fu: float | None = None
    moment_integer_distance: float | None = None
    magnetic: bool | None = None
    warnings: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class DFTResult(MSONableModel):
    """Engine-independent DFT result for one candidate (GPAW and VASP fill the same fields)."""

    schema_version: int = SCHEMA_VERSION
    engine: Literal["gpaw", "vasp"]
    settings: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None  # directory, vasprun or GPAW file the result was parsed from
    structure: dict[str, Any]  # pymatgen Structure.as_dict() of the final structure
    formula: str
    reduced_formula: str
    n_formula_units: float
    energy: float | None = None  # eV per cell (engine reference: GPAW != VASP)
    energy_per_atom: float | None = None
    efermi: float | None = None
    spin_polarised: bool
    total_moment: float | None = None  # μB per cell
    moment_per_fu: float | None = None
    site_moments: list[float] | None = None
    dos: PymatgenDos = None  # pymatgen CompleteDos (site/orbital projections where given)
    dos_method: str | None = None  # how the DOS was computed (tetrahedron, gaussian, vasp)
    eigenvalues: dict[str, list[list[float]]] | None = None  # spin -> [k][band], eV absolute
    kpoint_weights: list[float] | None = None
    analysis: HalfMetalAnalysis | None = None
    hull: dict[str, Any] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    candidate_id: str | None = None  # the campaign candidate it belongs to (None outside)

    @model_validator(mode="before")
    @classmethod
    def _old_forms(cls, data: Any) -> Any:
        """Results stored before the pymatgen DOS: ``dos`` as per-spin arrays (its ``method``
        moves to ``dos_method``), or a ``complete_dos`` beside it (preferred)."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not k.startswith("@")}
        complete = data.pop("complete_dos", None)
        old = data.get("dos")
        if isinstance(old, DOSData):
            old = old.model_dump()
        if isinstance(old, dict) and "up" in old and "densities" not in old:
            data.setdefault("dos_method", old.get("method"))
            data["dos"] = to_pymatgen_dos(old, data.get("efermi"), data.get("structure"))
        if complete is not None:
            data["dos"] = complete
        return data

    @property
    def dos_data(self) -> DOSData | None:
        """The total DOS as per-spin arrays (what the half-metal analysis reads)."""
        return dos_data(self.dos, self.dos_method or "")

    def to_json(self) -> str:
        """The result as a JSON string (its :meth:`as_dict`, ``@module``/``@class`` included)."""
        return json.dumps(self.as_dict())

    def write(self, path: str | Path) -> Path:
        """Write the result as JSON atomically (nothing half-written on failure)."""
        path = Path(path)
        atomic_write_bytes(path, self.to_json().encode())
        return path

    @classmethod
    def read(cls, path: str | Path) -> DFTResult:
        """Read a result file written by :meth:`write`; errors name the file and field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a JSON DFT result ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            raise InputError(f"{path}: invalid DFT result field '{loc}': {err['msg']}") from None

    def summary(self) -> dict[str, Any]:
        """A flat summary (verdict, P at E_F, per-spin gaps, moment) for tables and --json."""
        a = self.analysis
        out: dict[str, Any] = {
            "formula": self.reduced_formula,
            "engine": self.engine,
            "verdict": a.verdict if a else None,
            "polarisation": a.polarisation if a else None,
            "gap_up": None,
            "gap_down": None,
            "half_metallic_gap": a.half_metallic_gap if a else None,
            "total_moment": self.total_moment,
            "moment_per_fu": self.moment_per_fu,
            "efermi": self.efermi,
            "energy": self.energy,
            "warnings": list(a.warnings) if a else [],
        }
        if a:
            for spin in ("up", "down"):
                g = a.gaps.get(spin)
                out[f"gap_{spin}"] = (g.gap if g.gapped else 0.0) if g else None
        return out
