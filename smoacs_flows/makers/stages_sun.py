"""The S.U.N. stage functions: reference phases (configured file, keyword, or the reference
store filled from MP / Alexandria), their MLIP energies, and stability, uniqueness and novelty
over every relaxed candidate of a campaign (once per campaign: uniqueness is global)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.makers.settings import ScreeningSettings
from smoacs_flows.makers.stages_common import as_structure, merge_counts, mlip_relax

log = logging.getLogger(__name__)


def reference_source() -> str | None:
    """The source a worker can fetch missing reference phases from: ``mp`` when
    ``MP_API_KEY`` is set, ``alexandria`` when ``SMOACS_ALEXANDRIA_URLS`` names a dump (a
    local file or URL), else None."""
    import os

    if os.environ.get("MP_API_KEY"):
        return "mp"
    if os.environ.get("SMOACS_ALEXANDRIA_URLS"):
        return "alexandria"
    return None


def _lacking(entries: list, chemsys: str) -> bool:
    """Whether ``entries`` lack an elemental phase of some element of ``chemsys`` (no hull)."""
    have = {e.composition.elements[0].symbol for e in entries if e.composition.is_element}
    return not set(chemsys.split("-")) <= have


def _store_references(chemsys: set[str], sources: list[str] | None = None) -> list:
    """Entries of the reference store for the chemical systems, after fetching them from the
    campaign's ``reference_sources`` (once per system); systems still lacking are fetched from
    the source the worker's environment configures, and with none the job fails naming them."""
    from smoacs_flows.errors import SmoacsError
    from smoacs_flows.screening.references import (
        ReferenceStore,
        ensure_sources,
        entry_chemsys,
        fetch,
    )

    with ReferenceStore() as store:
        if sources:
            ensure_sources(store, chemsys, sources)
        missing = sorted(cs for cs in chemsys if _lacking(store.get(cs), cs))
        if missing:
            source = reference_source()
            if source is None or source in (sources or []):
                raise SmoacsError(
                    "stages.screening.references: store: the reference store has no "
                    f"(elemental) entries for chemical system(s) {', '.join(missing)} and no "
                    "other source is configured on this worker: run `smoacs-flows refs fetch "
                    f"--source mp --chemsys {','.join(missing)}` (needs MP_API_KEY) or "
                    "`smoacs-flows refs load FILE`, or set MP_API_KEY or "
                    "SMOACS_ALEXANDRIA_URLS=/path/to/convex_hull_pbe.json.bz2 for the worker "
                    "(or stages.screening.reference_sources: [mp, alexandria]), then "
                    "`smoacs-flows resume`"
                )
            log.info("fetching reference phases of %s from %s", ", ".join(missing), source)
            fetch(source, missing, store)
            still = sorted(cs for cs in missing if _lacking(store.get(cs), cs))
            if still:
                raise SmoacsError(
                    f"stages.screening.references: store: {source} has no elemental entries "
                    f"for chemical system(s) {', '.join(still)}"
                )
        refs = [e for cs in sorted(chemsys) for e in store.get(cs)]
    return list({(entry_chemsys(e), e.entry_id): e for e in refs}.values())


def _reference_file(references: str, base_dir: Path) -> Path:
    """A configured reference file's path (relative ones are relative to the campaign)."""
    path = Path(references).expanduser()
    return path if path.is_absolute() else base_dir / path


def _mlip_references(st: ScreeningSettings, refs: list) -> tuple[list, Any]:
    """``refs`` with the campaign's MLIP energies (relaxed once, cached in the reference
    store), and the counts of ``mlip_reference_entries``."""
    from smoacs_flows.screening.references import ReferenceStore
    from smoacs_flows.screening.stability import mlip_reference_entries

    with ReferenceStore() as store:
        return mlip_reference_entries(refs, st.mlip, lambda s: mlip_relax(st, s), store)


def _references(st: ScreeningSettings, base_dir: Path, chemsys: set[str]) -> list | None:
    """Reference entries for the campaign's chemical systems (None: not configured)."""
    if st.references is None:
        return None
    if st.references in ("mp-elements", "mp-or-elements"):
        from smoacs_flows.screening.builtin_refs import keyword_references

        return keyword_references(st.references, chemsys)[0]
    if st.references == "store":
        return _store_references(chemsys, st.reference_sources)
    from smoacs_flows.screening.pipeline import load_references

    return load_references(_reference_file(st.references, base_dir))


def _candidate_chemsys(relaxed_outputs: list[dict[str, Any]]) -> set[str]:
    from pymatgen.entries.computed_entries import ComputedEntry

    from smoacs_flows.screening.references import entry_chemsys

    return {
        entry_chemsys(ComputedEntry(as_structure(r["screening"]["relaxed"]).composition, 0.0))
        for out in relaxed_outputs
        for r in out["records"]
    }


def _needed_references(st: ScreeningSettings, base_dir: Path, chemsys: set[str]) -> list | None:
    """The configured reference entries of the chemical systems and their subsystems."""
    from smoacs_flows.screening.references import entry_chemsys, subsystems

    refs = _references(st, base_dir, chemsys)
    if refs is None:
        return None
    needed = {cs for c in chemsys for cs in subsystems(c)}
    return [e for e in refs if entry_chemsys(e) in needed]


def _candidate_entries(relaxed_outputs: list[dict[str, Any]], mlip: str) -> list:
    """Every relaxed candidate as an MP2020-processed MLIP entry (unprocessable ones left out:
    the S.U.N. job reports them)."""
    from smoacs_flows.screening.stability import mlip_entry

    out = []
    for o in relaxed_outputs:
        for r in o["records"]:
            scr = r["screening"]
            try:
                s = as_structure(scr["relaxed"])
                out.append(mlip_entry(s, scr["mlip_energy_per_atom"], mlip, entry_id=r["id"]))
            except Exception:  # noqa: BLE001 - judged (and named) in the S.U.N. job
                continue
    return out


def use_prototypes(st: ScreeningSettings) -> bool:
    """Whether prototype phases join the hull: as configured, else when the reference set is
    the elements only (the offline default); never without MLIP-relaxed references."""
    if st.references is None or not st.relax_references:
        return False
    if st.prototype_phases is not None:
        return st.prototype_phases
    from smoacs_flows.screening.builtin_refs import LABEL_ELEMENTS

    return reference_label(st.references) == LABEL_ELEMENTS


def _with_prototypes(
    st: ScreeningSettings, entries: list, relaxed_outputs: list[dict[str, Any]]
) -> tuple[list, dict[str, Any] | None]:
    """The hull's entries on one MLIP energy scale: ``entries`` that carry an MLIP-relaxed
    structure (energies without a structure, e.g. the shipped DFT elemental references, are
    left out), the elemental phases of every candidate element, and the binary and ternary
    prototype phases of the systems whose candidates pass the cut against the elements
    (cached per MLIP, system and prototype); and what was added."""
    if not use_prototypes(st):
        return entries, None
    from smoacs_flows.screening.prototype_hull import hull_entries
    from smoacs_flows.screening.references import ReferenceStore

    cands = _candidate_entries(relaxed_outputs, st.mlip)
    with ReferenceStore() as store:
        return hull_entries(
            entries, cands, st.mlip, st.e_hull_max, lambda s: mlip_relax(st, s), store
        )


def reference_energies(
    relaxed_outputs: list[dict[str, Any]], settings: dict[str, Any], base_dir: str
) -> dict[str, Any]:
    """The reference phases of every relaxed candidate's chemical system, MLIP-relaxed with the
    campaign's MLIP on its device (cached per MLIP and system in the reference store), plus the
    prototype phases of the systems that need them (:mod:`~smoacs_flows.screening.
    prototype_hull`): the ``reference relax`` job (gpu) before S.U.N."""
    st = ScreeningSettings.model_validate(settings)
    chemsys = _candidate_chemsys(relaxed_outputs)
    refs = _needed_references(st, Path(base_dir), chemsys) or []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entries, counts = _mlip_references(st, refs)
        entries, protos = _with_prototypes(st, entries, relaxed_outputs)
    return {
        "entries": [e.as_dict() for e in entries],
        "counts": counts,
        "chemsys": sorted(chemsys),
        "mlip": st.mlip,
        "prototypes": protos,
    }


def _stability(
    st: ScreeningSettings,
    records: list[dict[str, Any]],
    final: dict[str, Any],
    refs: list,
    protos: dict[str, Any] | None,
    rejected: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """Stability of every record on the hull of ``refs``; returns the stable ones and writes
    the per-candidate fields (``e_above_hull`` ≥ 0, the signed ``hull_distance``, whether it
    is a lower bound, the hull's name)."""
    from smoacs_flows.screening.prototype_hull import judge
    from smoacs_flows.screening.stability import Hull, mlip_entry

    hull = Hull(refs)
    covered = set(protos["systems"]) if protos else None
    label = hull_name(st, protos)
    kept = []
    for rec in records:
        scr = rec["screening"]
        try:
            entry = mlip_entry(
                final[rec["id"]], scr["mlip_energy_per_atom"], st.mlip, entry_id=rec["id"]
            )
            v = judge(entry, hull, st.e_hull_max, covered)
        except Exception as exc:  # noqa: BLE001 - per candidate, reported
            rejected[rec["id"]] = [f"stability failed: {exc}"[:300]]
            continue
        scr.update(
            e_above_hull=v.e_above_hull,
            hull_distance=v.hull_distance,
            e_above_hull_lower_bound=v.lower_bound,
            stability_reference=label,
            stable=v.stable,
        )
        if v.stable:
            kept.append(rec)
        else:
            rejected[rec["id"]] = [v.reason(st.e_hull_max) or ""]
    return kept


def hull_name(st: ScreeningSettings, protos: dict[str, Any] | None) -> str:
    """The hull's name for records, status, query and the report."""
    from smoacs_flows.screening.builtin_refs import LABEL_ELEMENTS
    from smoacs_flows.screening.prototype_hull import hull_label

    base = reference_label(st.references) or "no reference phases"
    if not protos:
        return base
    # the shipped elemental references are DFT energies without structures: left out then
    extra = None if base == LABEL_ELEMENTS else base
    return hull_label(extra, protos["n_phases"], len(protos["systems"]), st.mlip)


def sun_filter(
    relaxed_outputs: list[dict[str, Any]],
    settings: dict[str, Any],
    base_dir: str,
    references: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stability, uniqueness and novelty over every relaxed candidate of the campaign.

    ``references``: the output of :func:`reference_energies` (the MLIP-relaxed reference
    phases, from their own job); without it the configured references are used as they are,
    or relaxed here when ``relax_references`` is set. A candidate that survives every filter
    applied is passed on (to DFT); it is ``sun`` only when stability was against a compound
    hull and novelty was checked, and the funnel names the step by what was applied.
    """
    from monty.json import MontyDecoder
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    from smoacs_flows.screening.builtin_refs import LABEL_ELEMENTS
    from smoacs_flows.screening.matching import unique_and_novel
    from smoacs_flows.screening.prototype_hull import sun_label
    from smoacs_flows.screening.references import entry_chemsys

    st = ScreeningSettings.model_validate(settings)
    records = [r for out in relaxed_outputs for r in out["records"]]
    rejected: dict[str, list[str]] = {}
    for out in relaxed_outputs:
        rejected.update(out.get("rejected", {}))
    earlier = set(rejected)
    counts = merge_counts(relaxed_outputs)
    final = {r["id"]: as_structure(r["screening"]["relaxed"]) for r in records}
    chemsys = {entry_chemsys(ComputedEntry(s.composition, 0.0)) for s in final.values()}
    notes: list[str] = []
    protos = None
    if references is not None:
        dec = MontyDecoder()
        refs = [dec.process_decoded(d) for d in references["entries"]]
        protos = references.get("prototypes")
        notes.append(f"reference energies ({references['mlip']} job): {references['counts']}")
    else:
        refs = _needed_references(st, Path(base_dir), chemsys)
    alive = records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if refs is not None:
            if st.relax_references and references is None:
                refs, c = _mlip_references(st, refs)
                notes.append(f"reference energies: {c}")
                refs, protos = _with_prototypes(st, refs, relaxed_outputs)
            label = hull_name(st, protos)
            notes.insert(0, f"stability against: {label}")
            if protos:
                notes.append(f"prototype phases: {protos['counts']}")
            alive = _stability(st, records, final, refs, protos, rejected)
        else:
            notes.append("stability and novelty not evaluated: no reference phases configured")
        counts["stable"] = len(alive)
        ref_structs = None
        ref_ids: list[str] = []
        if refs:
            with_s = [e for e in refs if isinstance(e, ComputedStructureEntry)]
            ref_structs = [e.structure for e in with_s] or None
            ref_ids = [str(e.entry_id) for e in with_s]
        if refs is not None and st.novelty_references:
            own = user_novelty_references(st.novelty_references, Path(base_dir))
            ref_structs = (ref_structs or []) + [s for _, s in own]
            ref_ids += [i for i, _ in own]
            notes.append(f"novelty also against {len(own)} structures of {st.novelty_references}")
        m = unique_and_novel([final[r["id"]] for r in alive], ref_structs, n_jobs=st.n_jobs)
        survivors = []
        for i, rec in enumerate(alive):
            scr = rec["screening"]
            scr["unique"] = m.representative[i] == i
            if not scr["unique"]:
                rejected[rec["id"]] = [f"duplicate of {alive[m.representative[i]]['id']}"]
                continue
            if len(final[rec["id"]].composition.elements) == 1:
                scr["novel"] = False
                rejected[rec["id"]] = ["a pure element: not a novel compound"]
                continue
            if m.reference_match is not None:
                hit = m.reference_match[i]
                scr["novel"] = hit is None
                if hit is not None:
                    rejected[rec["id"]] = [f"matches reference {ref_ids[hit]}"]
                    continue
            else:
                scr["novel"] = None
            survivors.append(rec)
    elements_only = (
        refs is not None and not protos and reference_label(st.references) == (LABEL_ELEMENTS)
    )
    novelty_checked = refs is not None and m.reference_match is not None
    step = sun_label(elements_only or refs is None, novelty_checked)
    if refs is None:
        step = "passed (no stability or novelty filter)"
    for rec in survivors:
        # a stability that is only a lower bound (no compound phases for part of its system)
        # is not shown: passed on, but not called S.U.N.
        rec["screening"]["sun"] = step == "S.U.N." and not rec["screening"].get(
            "e_above_hull_lower_bound"
        )
    bounds = [r["id"] for r in survivors if r["screening"].get("e_above_hull_lower_bound")]
    if bounds:
        notes.append(
            f"{len(bounds)} survivor(s) with E_hull only a lower bound (two nonmetals: no "
            f"compound phases for that pair), passed on but not S.U.N.: {', '.join(bounds[:10])}"
        )
    if not novelty_checked and refs is not None:
        notes.append("novelty not checked: the reference set has no structures")
    counts["unique"] = sum(1 for r in alive if r["screening"]["unique"])
    counts["sun"] = len(survivors)
    # per evaluated candidate: hull distance and S.U.N. flags (the results store reads them)
    passed = {r["id"] for r in survivors}
    keys = ("e_above_hull", "hull_distance", "e_above_hull_lower_bound", "stable", "unique")
    scores = {
        r["id"]: {
            **{k: r["screening"].get(k) for k in (*keys, "novel", "stability_reference")},
            "passed": r["id"] in passed,
            "sun": bool(r["screening"].get("sun")),
        }
        for r in records
        if r["id"] not in earlier
    }
    own = {k: v for k, v in rejected.items() if k not in earlier}
    return {
        "records": survivors,
        "rejected": rejected,
        "stage_rejected": own,
        "scores": scores,
        "counts": dict(counts),
        "notes": notes,
        "sun_label": step,
        "hull": hull_name(st, protos) if refs is not None else None,
    }


def user_novelty_references(path: str, base_dir: Path) -> list[tuple[str, Any]]:
    """``[(id, Structure)]`` of a user's known structures (a CIF folder or a JSONL file),
    ids prefixed ``user:``."""
    from smoacs_flows.screening.pipeline import load_candidates

    p = Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    try:
        recs = load_candidates(p)
    except SmoacsError as exc:
        raise SpecError(f"stages.screening.novelty_references: {exc}") from None
    return [(f"user:{r['id']}", r["_structure"]) for r in recs]


def reference_label(references: str | None) -> str | None:
    """What the screening's reference set is, in words (None: no references)."""
    if references is None:
        return None
    if references in ("mp-elements", "mp-or-elements"):
        import os

        from smoacs_flows.screening.builtin_refs import LABEL_ELEMENTS, LABEL_MP

        online = references == "mp-or-elements" and os.environ.get("MP_API_KEY")
        return LABEL_MP if online else LABEL_ELEMENTS
    return "the reference store" if references == "store" else f"reference file {references}"


def check_references(settings: dict[str, Any], base_dir: Path) -> None:
    """Fail at submit time when the configured reference file does not exist."""
    st = ScreeningSettings.model_validate(settings)
    if st.references and st.references not in ("store", "mp-elements", "mp-or-elements"):
        path = _reference_file(st.references, base_dir)
        if not path.is_file():
            raise SpecError(f"stages.screening.references: {path}: no such file")
    if st.novelty_references:
        user_novelty_references(st.novelty_references, base_dir)  # readable, at submit time
