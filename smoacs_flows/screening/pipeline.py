"""The screening funnel: prefilter → MLIP relaxation → stability → uniqueness → novelty.

:func:`screen` takes candidate records (the ``propose`` format, see docs/architecture.md) and
returns survivors plus a :class:`Funnel` with counts in and out of each filter and every
rejected candidate's reasons. :func:`write_outputs` writes ``survivors.jsonl``, ``cif/<id>.cif``
and ``funnel.json`` into a directory atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from smoacs_flows.errors import InputError
from smoacs_flows.io import atomic_output_dir, read_jsonl, warnings_only_on_success, write_jsonl
from smoacs_flows.screening.matching import unique_and_novel
from smoacs_flows.screening.methods import DEFAULT_METHOD, DEFAULT_OPTIMIZER
from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one
from smoacs_flows.screening.prototype_hull import hull_entries, hull_label, judge, sun_label
from smoacs_flows.screening.references import entry_chemsys, subsystems
from smoacs_flows.screening.stability import Hull, mlip_entry, mlip_reference_entries
from smoacs_flows.screening.symmetry import relaxation_change

STAGES = ["prefilter", "relaxation", "stability", "uniqueness", "novelty"]


@dataclass
class ScreenConfig:
    """Settings of one screening run."""

    prefilter: PrefilterConfig = field(default_factory=PrefilterConfig)
    mlip: str = "chgnet"  # chgnet | mattersim | none
    method: str = DEFAULT_METHOD  # one of methods.METHODS (screening.relax.relax)
    fmax: float = 0.01
    steps: int = 500
    optimizer: str = DEFAULT_OPTIMIZER
    e_hull_max: float = 0.1
    n_jobs: int = 1
    relax_references: bool = True  # relax reference structures with the same MLIP
    prototype_phases: bool = False  # add MLIP-relaxed prototype phases (prototype_hull)
    reference_label: str | None = None  # what the reference set is, in words
    novelty_references: str | None = None  # the user's own known structures (CIFs / JSONL)


@dataclass
class Funnel:
    """Counts in/out of each stage with reasons; ``rejected`` maps candidate id → reasons."""

    n_input: int = 0
    stages: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    sun_label: str = "S.U.N."  # the last step, named by what was applied
    screened: list[dict[str, Any]] = field(default_factory=list)  # every record's screening

    def add(
        self,
        name: str,
        n_in: int,
        n_out: int | None,
        reasons: Counter,
        evaluated: bool,
        note: str | None = None,
    ) -> None:
        """Record one stage (``n_out`` None/equal to ``n_in`` when not evaluated)."""
        self.stages.append(
            {
                "stage": name,
                "evaluated": evaluated,
                "in": n_in,
                "out": n_in if n_out is None else n_out,
                "reasons": dict(reasons.most_common()),
                **({"note": note} if note else {}),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form of the funnel."""
        return {
            "n_input": self.n_input,
            "n_survivors": self.stages[-1]["out"] if self.stages else self.n_input,
            "stages": self.stages,
            "notes": self.notes,
            "settings": self.settings,
            "sun_label": self.sun_label,
            "rejected": self.rejected,
        }

    def table(self) -> str:
        """A plain-text funnel for the terminal."""
        lines = [f"{'stage':<12} {'in':>8} {'out':>8}  reasons"]
        for st in self.stages:
            if not st["evaluated"]:
                lines.append(
                    f"{st['stage']:<12} {st['in']:>8} {'-':>8}  not evaluated"
                    + (f" ({st['note']})" if st.get("note") else "")
                )
                continue
            top = "; ".join(f"{k}: {v}" for k, v in list(st["reasons"].items())[:3])
            lines.append(f"{st['stage']:<12} {st['in']:>8} {st['out']:>8}  {top}")
        return "\n".join(lines)


def _reason_class(reason: str) -> str:
    """Group similar reasons for counting: numbers stripped, except a threshold after ``>``
    (``e_above_hull > 0.1 eV/atom``)."""
    import re

    m = re.match(r"e_above_hull (≥ )?[-+\d.e]+ eV/atom > ([-+\d.e]+)(.*)", reason)
    if m:
        return f"e_above_hull > {m.group(2)} eV/atom{m.group(3)}"
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", reason)


# ----------------------------------------------------------------------------- input


def load_candidates(path: str | Path) -> list[dict[str, Any]]:
    """Candidate records from a ``proposals.jsonl`` file or a folder of CIFs.

    Each record gets ``_structure`` (a pymatgen Structure). Errors name the file/line/field.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    if path.is_dir():
        cifs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".cif")
        if not cifs:
            raise InputError(f"{path}: folder has no .cif files")
        for p in cifs:
            try:
                with warnings_only_on_success():
                    s = Structure.from_file(p)
            except Exception as exc:  # noqa: BLE001 - reported with the file
                raise InputError(f"{p}: cannot read CIF ({str(exc).splitlines()[0]})") from None
            records.append(_minimal_record(p.stem, s))
    elif path.is_file():
        for i, rec in enumerate(read_jsonl(path), 1):
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{i}: a record must be a JSON object")
            if "structure" not in rec:
                raise InputError(f"{path}:{i}: record has no 'structure' field")
            try:
                s = Structure.from_dict(rec["structure"])
            except Exception as exc:  # noqa: BLE001
                raise InputError(
                    f"{path}:{i}: field 'structure' is not a pymatgen Structure "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            rec = dict(rec)
            rec.setdefault("id", f"{path.stem}-{i}")
            rec["_structure"] = s
            records.append(rec)
        if not records:
            raise InputError(f"{path}: no candidate records")
    else:
        raise InputError(f"{path}: no such file or folder")
    ids = Counter(str(r["id"]) for r in records)
    dup = [k for k, v in ids.items() if v > 1]
    if dup:
        raise InputError(f"{path}: duplicate candidate id(s) {', '.join(dup[:5])}")
    bad = [str(r["id"]) for r in records if "/" in str(r["id"]) or str(r["id"]) in ("", ".", "..")]
    if bad:
        raise InputError(f"{path}: candidate id(s) not usable as file names: {bad[:5]}")
    return records


def _minimal_record(cid: str, s: Structure) -> dict[str, Any]:
    comp = s.composition
    return {
        "id": cid,
        "formula": comp.formula,
        "reduced_formula": comp.reduced_formula,
        "elements": sorted(el.symbol for el in comp.elements),
        "n_elements": len(comp.elements),
        "n_sites": len(s),
        "structure": s.as_dict(),
        "_structure": s,
    }


def load_references(path: str | Path) -> list[ComputedEntry]:
    """MP2020-corrected reference entries from a JSON(.gz) file."""
    from smoacs_flows.screening.references import apply_mp2020, read_entries_file

    return apply_mp2020(read_entries_file(path), where=f"{path}: ")


def _given_energy(rec: dict[str, Any]) -> float | None:
    """An energy per atom carried by the record (for ``--mlip none``)."""
    scr = rec.get("screening") or {}
    if scr.get("mlip_energy_per_atom") is not None:
        return float(scr["mlip_energy_per_atom"])
    for k, v in (rec.get("predicted") or {}).items():
        if k.endswith("energy_per_atom") and "formation" not in k and v is not None:
            return float(v)
    return None


# ----------------------------------------------------------------------------- the funnel


def screen(
    records: list[dict[str, Any]],
    references: Sequence[ComputedEntry] | None,
    cfg: ScreenConfig,
    store: Any = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[list[dict[str, Any]], Funnel]:
    """Run the funnel; returns (survivor records with a ``screening`` field, funnel).

    ``progress(stage, total)`` returns an ``update(n)`` callback (e.g. a tqdm bar's).
    """
    funnel = Funnel(n_input=len(records))
    funnel.settings = {
        "mlip": cfg.mlip,
        "method": cfg.method,
        "fmax": cfg.fmax,
        "steps": cfg.steps,
        "optimizer": cfg.optimizer,
        "e_hull_max": cfg.e_hull_max,
        "prefilter": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg.prefilter).items()
        },
        "matcher": {"ltol": 0.2, "stol": 0.3, "angle_tol": 5},
        "references": None if references is None else len(references),
    }
    scr: dict[str, dict[str, Any]] = {
        r["id"]: {
            "mlip": None if cfg.mlip == "none" else cfg.mlip,
            "relaxed": None,
            "mlip_energy_per_atom": None,
            "relax_converged": None,
            "relax_steps": None,
            "e_above_hull": None,
            "stable": None,
            "unique": None,
            "novel": None,
            "duplicate_of": None,
            "matches_reference": None,
            "reasons": [],
        }
        for r in records
    }

    def reject(rec: dict[str, Any], reasons: list[str], counter: Counter) -> None:
        scr[rec["id"]]["reasons"].extend(reasons)
        funnel.rejected[rec["id"]] = list(scr[rec["id"]]["reasons"])
        for x in reasons:
            counter[_reason_class(x)] += 1

    def bar(stage: str, total: int) -> Callable[[int], None] | None:
        return progress(stage, total) if progress else None

    # 1. prefilter ------------------------------------------------------------------
    alive, c = [], Counter()
    for rec in records:
        why = prefilter_one(rec, rec["_structure"], cfg.prefilter)
        if why:
            reject(rec, why, c)
        else:
            alive.append(rec)
    funnel.add("prefilter", len(records), len(alive), c, True)

    # 2. relaxation -----------------------------------------------------------------
    final: dict[str, Structure] = {r["id"]: r["_structure"] for r in records}
    energy: dict[str, float | None] = {}
    if cfg.mlip != "none":
        from smoacs_flows.screening.relax import relax

        n_in = len(alive)
        res = relax(
            [r["_structure"] for r in alive],
            cfg.mlip,
            cfg.method,
            cfg.fmax,
            cfg.steps,
            cfg.optimizer,
            progress=bar("relax", n_in),
        )
        kept, c = [], Counter()
        for rec, r in zip(alive, res):
            s = scr[rec["id"]]
            s["relax_steps"], s["relax_converged"] = r.steps, r.converged
            s["relax_wall_time"] = r.wall_time
            if not r.ok:
                reject(rec, [f"relaxation failed: {r.error}"], c)
                continue
            final[rec["id"]] = r.structure
            energy[rec["id"]] = r.energy_per_atom
            s.update(relaxation_change(rec["_structure"], r.structure))
            s["relaxed"] = r.structure.as_dict()
            s["mlip_energy_per_atom"] = r.energy_per_atom
            kept.append(rec)
        n_unconv = sum(1 for rec in kept if not scr[rec["id"]]["relax_converged"])
        if n_unconv:
            funnel.notes.append(
                f"{n_unconv} relaxations hit the step cap ({cfg.steps}) "
                "without reaching fmax; kept with relax_converged=false"
            )
        funnel.add("relaxation", n_in, len(kept), c, True)
        alive = kept
    else:
        for rec in alive:
            energy[rec["id"]] = _given_energy(rec)
        funnel.add("relaxation", len(alive), None, Counter(), False, "--mlip none")

    # 3. stability ------------------------------------------------------------------
    if references is None:
        funnel.add("stability", len(alive), None, Counter(), False, "no reference phases")
    else:
        needed = {
            cs
            for rec in alive
            for cs in subsystems(entry_chemsys(ComputedEntry(final[rec["id"]].composition, 0.0)))
        }
        refs = [e for e in references if entry_chemsys(e) in needed]
        from smoacs_flows.screening.relax import relax as _relax

        def relax_fn(structs: list[Structure]) -> list[Any]:
            return _relax(structs, cfg.mlip, cfg.method, cfg.fmax, cfg.steps, cfg.optimizer)

        if cfg.mlip != "none" and cfg.relax_references:
            refs, counts = mlip_reference_entries(refs, cfg.mlip, relax_fn, store)
            funnel.notes.append(
                f"reference energies: {counts['mlip']} relaxed with {cfg.mlip}, "
                f"{counts['cached']} from the (mlip, chemsys) cache, {counts['dft_kept']} "
                f"without structure kept at DFT energy, {counts['failed']} failed relaxation"
            )
        protos = None
        if cfg.prototype_phases and cfg.mlip != "none" and cfg.relax_references:
            cands = []
            for rec in alive:
                e = energy.get(rec["id"])
                if e is not None and math.isfinite(e):
                    with contextlib.suppress(Exception):  # judged (and named) below
                        cands.append(mlip_entry(final[rec["id"]], e, cfg.mlip, str(rec["id"])))
            refs, protos = hull_entries(refs, cands, cfg.mlip, cfg.e_hull_max, relax_fn, store)
            funnel.notes.append(f"prototype phases: {protos['counts']}")
        base = cfg.reference_label or "the given reference entries"
        if protos:
            from smoacs_flows.screening.builtin_refs import LABEL_ELEMENTS

            extra = None if base == LABEL_ELEMENTS else base
            label = hull_label(extra, protos["n_phases"], len(protos["systems"]), cfg.mlip)
        else:
            label = base
        funnel.notes.insert(0, f"stability against: {label}")
        funnel.settings["hull"] = label
        references = refs  # novelty: every structure on the hull
        hull = Hull(refs)
        covered = set(protos["systems"]) if protos else None
        kept, c = [], Counter()
        n_in = len(alive)
        for rec in alive:
            s = scr[rec["id"]]
            e = energy.get(rec["id"])
            if e is None or not math.isfinite(e):
                reject(
                    rec,
                    [
                        "stability not evaluated: no energy (use an MLIP or give "
                        "screening.mlip_energy_per_atom)"
                    ],
                    c,
                )
                continue
            try:
                entry = mlip_entry(final[rec["id"]], e, cfg.mlip, entry_id=str(rec["id"]))
                v = judge(entry, hull, cfg.e_hull_max, covered)
            except InputError as exc:
                reject(rec, [str(exc)], c)
                continue
            except Exception as exc:  # noqa: BLE001 - compatibility errors, per structure
                reject(rec, [f"stability failed: {type(exc).__name__}: {exc}"[:300]], c)
                continue
            s["e_above_hull"] = v.e_above_hull
            s["hull_distance"] = v.hull_distance
            s["e_above_hull_lower_bound"] = v.lower_bound
            s["stability_reference"] = label
            s["corrected_energy_per_atom"] = entry.energy_per_atom
            s["stable"] = v.stable
            if not s["stable"]:
                reject(rec, [v.reason(cfg.e_hull_max) or ""], c)
            else:
                kept.append(rec)
        funnel.add("stability", n_in, len(kept), c, True)
        alive = kept

    # 4-5. uniqueness and novelty ------------------------------------------------------
    ref_structs = None
    ref_ids: list[str] = []
    if references is not None:
        with_s = [e for e in references if isinstance(e, ComputedStructureEntry)]
        ref_structs = [e.structure for e in with_s]
        ref_ids = [str(e.entry_id) for e in with_s]
        if cfg.novelty_references is not None:
            own = load_candidates(cfg.novelty_references)
            ref_structs += [r["_structure"] for r in own]
            ref_ids += [f"user:{r['id']}" for r in own]
            funnel.notes.append(
                f"novelty also against {len(own)} structures of {cfg.novelty_references}"
            )
        ref_structs = ref_structs or None  # no structures: novelty cannot be evaluated
    structs = [final[r["id"]] for r in alive]
    m = unique_and_novel(
        structs, ref_structs, n_jobs=cfg.n_jobs, progress=bar("match", len(structs))
    )
    kept, c = [], Counter()
    for i, rec in enumerate(alive):
        s = scr[rec["id"]]
        s["unique"] = m.representative[i] == i
        if not s["unique"]:
            s["duplicate_of"] = alive[m.representative[i]]["id"]
            reject(rec, [f"duplicate of {s['duplicate_of']}"], c)
        else:
            kept.append(rec)
    funnel.add("uniqueness", len(alive), len(kept), c, True)
    n_in = len(kept)
    if m.reference_match is None:
        why = "no reference phases" if references is None else "reference set has no structures"
        funnel.add("novelty", n_in, None, Counter(), False, why)
        survivors = kept
    else:
        survivors, c = [], Counter()
        idx = {rec["id"]: i for i, rec in enumerate(alive)}
        for rec in kept:
            hit = m.reference_match[idx[rec["id"]]]
            s = scr[rec["id"]]
            s["novel"] = hit is None
            if len(final[rec["id"]].composition.elements) == 1:
                s["novel"] = False
                reject(rec, ["a pure element: not a novel compound"], c)
            elif hit is not None:
                s["matches_reference"] = ref_ids[hit]
                reject(rec, [f"matches reference {ref_ids[hit]}"], c)
            else:
                survivors.append(rec)
        funnel.add("novelty", n_in, len(survivors), c, True)

    elements_only = bool(
        references is not None and funnel.settings.get("hull", "").startswith("elements only")
    )
    funnel.sun_label = (
        sun_label(elements_only, m.reference_match is not None)
        if references is not None
        else "passed (no stability or novelty filter)"
    )
    alive_ids = {rec["id"] for rec in survivors}
    for rid, s in scr.items():
        s["passed"] = rid in alive_ids
        s["sun"] = bool(
            s["passed"] and funnel.sun_label == "S.U.N." and not s.get("e_above_hull_lower_bound")
        )
    funnel.screened = [{"id": r["id"], "screening": scr[r["id"]]} for r in records]
    out = []
    for rec in survivors:
        r = {k: v for k, v in rec.items() if k != "_structure"}
        r["screening"] = scr[rec["id"]]
        out.append(r)
    return out, funnel


def write_outputs(
    out_dir: str | Path, survivors: list[dict[str, Any]], funnel: Funnel, force: bool = False
) -> Path:
    """Write survivors.jsonl, cif/<id>.cif (relaxed when available) and funnel.json atomically."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, force=force) as tmp:
        write_jsonl(tmp / "survivors.jsonl", survivors)
        write_jsonl(tmp / "screened.jsonl", funnel.screened)  # survivors and rejects
        (tmp / "cif").mkdir()
        for r in survivors:
            d = r["screening"].get("relaxed") or r["structure"]
            Structure.from_dict(d).to(filename=str(tmp / "cif" / f"{r['id']}.cif"))
        (tmp / "funnel.json").write_text(json.dumps(funnel.as_dict(), indent=1))
    return out_dir
