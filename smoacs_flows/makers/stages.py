"""Plain-Python stage functions the jobs call: thin adapters over the stage packages.

Each takes and returns JSON-able data (candidate records, see docs/architecture.md), so a job's
output can live in any JobStore. The screening funnel of ``screening.pipeline.screen`` runs in
one process; here it is cut at the job boundaries (prefilter per chunk, relaxation per chunk,
S.U.N. once per campaign because uniqueness is global) from the screening package's public
pieces: ``prefilter_one``, ``relax``, ``Hull``/``mlip_entry``/``mlip_reference_entries`` and
``unique_and_novel``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from smoacs_flows.campaign import Campaign, campaign_from_dict
from smoacs_flows.config import software_versions
from smoacs_flows.errors import SpecError
from smoacs_flows.makers.settings import DftSettings, ScreeningSettings

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- campaign


def as_structure(obj: Structure | dict[str, Any]) -> Structure:
    """A Structure from a Structure or its dict (job inputs arrive decoded or not)."""
    return obj if isinstance(obj, Structure) else Structure.from_dict(obj)


def campaign_payload(campaign: Campaign) -> dict[str, Any]:
    """The campaign as a JSON-able job argument (``base_dir`` travels beside it)."""
    return {"spec": campaign.model_dump(mode="json"), "base_dir": str(campaign.base_dir)}


def campaign_from_payload(payload: dict[str, Any]) -> Campaign:
    """Inverse of :func:`campaign_payload`."""
    return campaign_from_dict(
        payload["spec"], source="campaign", base_dir=Path(payload["base_dir"])
    )


def variant_campaign(campaign: Campaign, variant: dict[str, Any] | None) -> Campaign:
    """The campaign with a sweep point's loss weights; its name (id prefix) gets the label."""
    if not variant or not variant.get("weights"):
        return campaign
    data = campaign.model_dump(mode="json")
    for loss in data["losses"]:
        key = loss.get("name") or loss["term"]
        if key in variant["weights"]:
            loss["weight"] = float(variant["weights"][key])
    data["name"] = f"{campaign.name}.{variant['label']}"
    return campaign_from_dict(
        data, source=f"campaign variant {variant['label']}", base_dir=campaign.base_dir
    )


def n_batches(campaign: Campaign) -> int:
    """Number of optimiser batches (as ``ProposalRun.batches``)."""
    sch = campaign.schedule
    return math.ceil(sch.n_candidates / sch.batch_size)


def validate_proposal(campaign: Campaign, templates: bool = True) -> int:
    """Everything the proposal stage checks before optimising (templates, patterns, terms),
    without loading any predictor; returns the number of batches. ``templates`` False skips
    the per-template pattern checks (sweep variants share the first variant's templates)."""
    from smoacs_flows.smoacs.propose import ProposalRun

    check_predictors(campaign)
    # predictors and not-yet-cached remote templates are resolved on the worker, at run time
    run = ProposalRun(campaign, predictors={}, remote_templates=False, lazy_templates=not templates)
    return len(run.batches)


def check_predictors(campaign: Campaign) -> None:
    """Predictor types exist and their options are accepted by the factory (no model load).

    Reads the predictor registry of ``predictors.base`` (no public listing exists yet).
    """
    import importlib
    import inspect

    from smoacs_flows.predictors import base

    for name, spec in campaign.predictors.items():
        kind = spec.get("type")
        factory = base._REGISTRY.get(kind)
        if factory is None:
            raise SpecError(
                f"predictors.{name}.type: {kind!r} is unknown; choose one of "
                f"{sorted(base._REGISTRY)}"
            )
        if isinstance(factory, str):
            module, func = factory.split(":")
            factory = getattr(importlib.import_module(module), func)
        params = inspect.signature(factory).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        bad = sorted(set(spec) - {"type"} - set(params))
        if bad:
            raise SpecError(
                f"predictors.{name}.{bad[0]}: not an option of the {kind} predictor "
                f"(options: {', '.join(k for k in params if k != 'device')})"
            )


# ----------------------------------------------------------------------------- stages


def propose(
    payload: dict[str, Any], batch_indices: list[int], variant: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Optimise the given batches of a (variant) campaign; returns records and counts."""
    from smoacs_flows.smoacs.propose import ProposalRun

    base = campaign_from_payload(payload)
    camp = variant_campaign(base, variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # validated at submit time: resolve only the templates these batches use
        res = ProposalRun(camp, lazy_templates=True).run(batch_indices=batch_indices)
    for r in res.records:
        r["campaign"] = base.name
        if variant and variant.get("weights"):
            r["variant"] = variant["label"]
            r["sweep"] = dict(variant["weights"])
    return {
        "records": res.records,
        "dropped": res.dropped,
        "stats": res.stats,
        "counts": {"proposed": len(res.records) + len(res.dropped), "exported": len(res.records)},
        "versions": software_versions(),
        "batches": list(batch_indices),
        "variant": (variant or {}).get("label"),
    }


def _merge_counts(outputs: list[dict[str, Any]]) -> Counter:
    c: Counter = Counter()
    for o in outputs:
        c.update(o.get("counts", {}))
    return c


def prefilter(
    proposal_outputs: list[dict[str, Any]], settings: dict[str, Any], policy: str
) -> dict[str, Any]:
    """Prefilter the records of one or more proposal jobs."""
    from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one

    st = ScreeningSettings.model_validate(settings).prefilter
    pol = policy if st.neutrality_policy == "campaign" else st.neutrality_policy
    cfg = PrefilterConfig(
        band_gap_max=st.band_gap_max,
        band_gap_key=st.band_gap_key,
        max_elements=st.max_elements,
        min_distance=st.min_distance,
        neutrality_policy=pol,
    )
    kept, rejected, reasons = [], {}, Counter()
    n_in = 0
    for out in proposal_outputs:
        for rec in out["records"]:
            n_in += 1
            why = prefilter_one(rec, as_structure(rec["structure"]), cfg)
            if why:
                rejected[rec["id"]] = why
                reasons.update(why)
            else:
                kept.append(rec)
    counts = _merge_counts(proposal_outputs)
    counts["prefiltered"] = len(kept)
    return {"records": kept, "rejected": rejected, "reasons": dict(reasons), "counts": dict(counts)}


def relax(prefiltered: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """MLIP-relax one chunk of prefiltered records (screening.relax)."""
    from smoacs_flows.screening.relax import relax as relax_structures

    st = ScreeningSettings.model_validate(settings)
    records = prefiltered["records"]
    structs = [as_structure(r["structure"]) for r in records]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = relax_structures(
            structs,
            st.mlip,
            st.method,
            st.fmax,
            st.steps,
            st.optimizer,
            device=st.device,
            model=st.mattersim_model,
        )
    moments: dict[int, list[float]] = {}
    if st.mlip == "chgnet":  # site-moment magnitudes of the relaxed cells (DFT ranking)
        from smoacs_flows.screening.halfmetal_rank import chgnet_site_moments

        ok = [i for i, r in enumerate(res) if r.ok]
        moments = dict(zip(ok, chgnet_site_moments([res[i].structure for i in ok])))
    kept, rejected = [], {}
    for i, (rec, r) in enumerate(zip(records, res)):
        if not r.ok:
            rejected[rec["id"]] = [f"relaxation failed: {r.error}"]
            continue
        rec = dict(rec)
        rec["screening"] = {
            "mlip": st.mlip,
            "relaxed": r.structure.as_dict(),
            "mlip_energy_per_atom": r.energy_per_atom,
            "relax_converged": r.converged,
            "relax_steps": r.steps,
            "relax_wall_time": r.wall_time,
        }
        if i in moments:
            rec["screening"]["mlip_site_magmoms"] = moments[i]
        kept.append(rec)
    counts = dict(prefiltered.get("counts", {}))
    counts["relaxed"] = len(kept)
    # ``rejected`` accumulates the funnel so far; ``stage_rejected`` is this stage's own
    return {
        "records": kept,
        "rejected": {**prefiltered.get("rejected", {}), **rejected},
        "stage_rejected": rejected,
        "counts": counts,
        "versions": software_versions(),
    }


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

    path = Path(st.references).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return load_references(path)


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


def reference_energies(
    relaxed_outputs: list[dict[str, Any]], settings: dict[str, Any], base_dir: str
) -> dict[str, Any]:
    """The reference phases of every relaxed candidate's chemical system, MLIP-relaxed with the
    campaign's MLIP on its device (cached per MLIP and system in the reference store): the
    ``reference relax`` job (gpu) before S.U.N."""
    from smoacs_flows.screening.references import ReferenceStore
    from smoacs_flows.screening.relax import relax as relax_structures
    from smoacs_flows.screening.stability import mlip_reference_entries

    st = ScreeningSettings.model_validate(settings)
    chemsys = _candidate_chemsys(relaxed_outputs)
    refs = _needed_references(st, Path(base_dir), chemsys) or []

    def relax_fn(structs: list[Structure]) -> list[Any]:
        return relax_structures(
            structs,
            st.mlip,
            st.method,
            st.fmax,
            st.steps,
            st.optimizer,
            device=st.device,
            model=st.mattersim_model,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ReferenceStore() as store:
            entries, counts = mlip_reference_entries(refs, st.mlip, relax_fn, store)
    return {
        "entries": [e.as_dict() for e in entries],
        "counts": counts,
        "chemsys": sorted(chemsys),
        "mlip": st.mlip,
    }


def sun_filter(
    relaxed_outputs: list[dict[str, Any]],
    settings: dict[str, Any],
    base_dir: str,
    references: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stability, uniqueness and novelty over every relaxed candidate of the campaign.

    ``references``: the output of :func:`reference_energies` (the MLIP-relaxed reference
    phases, from their own job); without it the configured references are used as they are,
    or relaxed here when ``relax_references`` is set.
    """
    from monty.json import MontyDecoder
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    from smoacs_flows.screening.matching import unique_and_novel
    from smoacs_flows.screening.references import entry_chemsys
    from smoacs_flows.screening.stability import Hull, mlip_entry, mlip_reference_entries

    st = ScreeningSettings.model_validate(settings)
    records = [r for out in relaxed_outputs for r in out["records"]]
    rejected: dict[str, list[str]] = {}
    for out in relaxed_outputs:
        rejected.update(out.get("rejected", {}))
    earlier = set(rejected)
    counts = _merge_counts(relaxed_outputs)
    final = {r["id"]: as_structure(r["screening"]["relaxed"]) for r in records}
    chemsys = {entry_chemsys(ComputedEntry(s.composition, 0.0)) for s in final.values()}
    notes: list[str] = []
    ref_label = reference_label(st.references)
    if ref_label is not None:
        notes.append(f"stability against: {ref_label}")
    if references is not None:
        dec = MontyDecoder()
        refs = [dec.process_decoded(d) for d in references["entries"]]
        notes.append(f"reference energies ({references['mlip']} job): {references['counts']}")
    else:
        refs = _needed_references(st, Path(base_dir), chemsys)
    alive = records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if refs is not None:
            if st.relax_references and references is None:
                from smoacs_flows.screening.references import ReferenceStore
                from smoacs_flows.screening.relax import relax as relax_structures

                def relax_fn(structs: list[Structure]) -> list[Any]:
                    return relax_structures(
                        structs,
                        st.mlip,
                        st.method,
                        st.fmax,
                        st.steps,
                        st.optimizer,
                        device=st.device,
                        model=st.mattersim_model,
                    )

                with ReferenceStore() as store:
                    refs, c = mlip_reference_entries(refs, st.mlip, relax_fn, store)
                notes.append(f"reference energies: {c}")
            hull = Hull(refs)
            kept = []
            for rec in alive:
                scr = rec["screening"]
                try:
                    entry = mlip_entry(
                        final[rec["id"]], scr["mlip_energy_per_atom"], st.mlip, entry_id=rec["id"]
                    )
                    eh = hull.e_above_hull(entry)
                except Exception as exc:  # noqa: BLE001 - per candidate, reported
                    rejected[rec["id"]] = [f"stability failed: {exc}"[:300]]
                    continue
                scr["e_above_hull"] = eh
                scr["stability_reference"] = ref_label
                scr["stable"] = eh <= st.e_hull_max
                if scr["stable"]:
                    kept.append(rec)
                else:
                    rejected[rec["id"]] = [f"e_above_hull {eh:.3f} eV/atom > {st.e_hull_max}"]
            alive = kept
        else:
            notes.append("stability and novelty not evaluated: no reference phases configured")
        counts["stable"] = len(alive)
        ref_structs = None
        ref_ids: list[str] = []
        if refs:
            with_s = [e for e in refs if isinstance(e, ComputedStructureEntry)]
            ref_structs = [e.structure for e in with_s] or None
            ref_ids = [str(e.entry_id) for e in with_s]
        m = unique_and_novel([final[r["id"]] for r in alive], ref_structs, n_jobs=st.n_jobs)
        survivors = []
        for i, rec in enumerate(alive):
            scr = rec["screening"]
            scr["unique"] = m.representative[i] == i
            if not scr["unique"]:
                rejected[rec["id"]] = [f"duplicate of {alive[m.representative[i]]['id']}"]
                continue
            if m.reference_match is not None:
                hit = m.reference_match[i]
                scr["novel"] = hit is None
                if hit is not None:
                    rejected[rec["id"]] = [f"matches reference {ref_ids[hit]}"]
                    continue
            survivors.append(rec)
    counts["unique"] = sum(1 for r in alive if r["screening"]["unique"])
    counts["sun"] = len(survivors)
    # per evaluated candidate: hull distance and S.U.N. flags (the results store reads them)
    scores = {
        r["id"]: {k: r["screening"].get(k) for k in ("e_above_hull", "stable", "unique", "novel")}
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
    }


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


def rank_key(rec: dict[str, Any], rank_by: str) -> float:
    """Sort key of a survivor (lower is better; missing values last)."""
    if rank_by == "halfmetal":
        from smoacs_flows.screening.halfmetal_rank import halfmetal_score

        return halfmetal_score(rec)
    scr = rec.get("screening") or {}
    v = {
        "e_above_hull": scr.get("e_above_hull"),
        "mlip_energy_per_atom": scr.get("mlip_energy_per_atom"),
        "loss": (rec.get("losses") or {}).get("total"),
    }[rank_by]
    if v is None:  # e.g. no hull: fall back on the MLIP energy
        v = scr.get("mlip_energy_per_atom")
    return float("inf") if v is None else float(v)


def select_for_dft(survivors: list[dict[str, Any]], dft: DftSettings) -> list[dict[str, Any]]:
    """The best ``max_candidates`` survivors by ``rank_by``."""
    return sorted(survivors, key=lambda r: rank_key(r, dft.rank_by))[: dft.max_candidates]


def dft_structure(rec: dict[str, Any], symprec: float | None = None) -> Structure:
    """The structure DFT starts from: the MLIP-relaxed one when present, symmetrised to the
    primitive standard cell of its space group within ``symprec`` Å when given (MLIP
    relaxations leave tiny distortions that would cost the DFT code all its symmetry)."""
    scr = rec.get("screening") or {}
    s = as_structure(scr.get("relaxed") or rec["structure"])
    if symprec:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        try:
            sym = SpacegroupAnalyzer(s, symprec=symprec).get_primitive_standard_structure()
        except Exception:  # noqa: BLE001 - spglib found nothing usable: keep the structure
            return s
        if len(sym) <= len(s) and abs(sym.volume / len(sym) - s.volume / len(s)) < 0.05 * (
            s.volume / len(s)
        ):
            return sym
    return s


def run_gpaw(rec: dict[str, Any], dft: dict[str, Any], work_dir: str | None) -> dict[str, Any]:
    """The GPAW chain on one survivor → a DFTResult dict tagged with the candidate id."""
    from smoacs_flows.dft.analysis import AnalysisSettings
    from smoacs_flows.dft.gpaw_engine import GPAWSettings
    from smoacs_flows.dft.gpaw_engine import run_gpaw as _run

    st = DftSettings.model_validate(dft)
    result = _run(
        dft_structure(rec, st.symprec),
        GPAWSettings(**st.gpaw),
        AnalysisSettings(**st.analysis),
        work_dir=work_dir,
    )
    out = result.model_dump(mode="json")
    out["candidate_id"] = rec["id"]
    return out


def summarise(
    sun: dict[str, Any],
    dft_results: list[dict[str, Any]],
    top: int = 10,
    e_hull_max: float | None = None,
) -> dict[str, Any]:
    """The campaign funnel and top candidates (with their DFT verdicts where run).

    ``e_hull_max`` adds the seed's last step: the DFT half-metals whose DFT energy above the
    hull (``result["hull"]``, VASP against the MP + Alexandria reference store) is at most it.
    """
    c = dict(sun.get("counts", {}))
    by_id = {d.get("candidate_id"): d for d in dft_results if d}
    n_hm = sum(
        1 for d in by_id.values() if ((d.get("analysis") or {}).get("verdict")) == "half_metal"
    )
    funnel = [
        ("proposed", c.get("proposed", 0)),
        ("prefiltered", c.get("prefiltered", 0)),
        ("relaxed", c.get("relaxed", 0)),
        ("S.U.N.", c.get("sun", 0)),
        ("DFT", len(by_id)),
        ("half-metal", n_hm),
    ]
    notes = list(sun.get("notes", []))
    if e_hull_max is not None:
        hms = [
            d for d in by_id.values() if (d.get("analysis") or {}).get("verdict") == "half_metal"
        ]
        hulls = [(d.get("hull") or {}).get("e_above_hull") for d in hms]
        funnel.append(
            (
                f"DFT hull ≤ {e_hull_max:g}",
                sum(1 for h in hulls if h is not None and h <= e_hull_max),
            )
        )
        if any(h is None for h in hulls):
            notes.append(
                f"{sum(1 for h in hulls if h is None)} half-metal(s) without a DFT hull distance "
                "(GPAW energies are not comparable to MP, or the reference store lacks the "
                "system)"
            )
    rows = []
    recs = sun.get("records", [])
    # every DFT'd survivor, then the rest as they come (sorted below)
    recs = [r for r in recs if r["id"] in by_id] + [r for r in recs if r["id"] not in by_id]
    for rec in recs[: max(top, len(by_id))]:
        d = by_id.get(rec["id"]) or {}
        a = d.get("analysis") or {}
        scr = rec.get("screening") or {}
        rows.append(
            {
                "id": rec["id"],
                "formula": rec.get("reduced_formula"),
                "e_above_hull": scr.get("e_above_hull"),
                "mlip_energy_per_atom": scr.get("mlip_energy_per_atom"),
                "verdict": a.get("verdict"),
                "moment_per_fu": d.get("moment_per_fu"),
                "polarisation": a.get("polarisation"),
                "prototype": rec.get("template_id"),
                "gapped_channel": a.get("gapped_channel"),
                "spin_gap": ((a.get("gaps") or {}).get(a.get("gapped_channel") or "") or {}).get(
                    "gap"
                ),
            }
        )
    dft_ids = set(by_id)
    rows.sort(
        key=lambda r: (
            r["id"] not in dft_ids,
            r["e_above_hull"] is None,
            r["e_above_hull"] or 0.0,
            r["mlip_energy_per_atom"] or 0.0,
        )
    )
    return {"funnel": funnel, "counts": c, "top": rows[:top], "notes": notes}


def format_summary(summary: dict[str, Any]) -> str:
    """The funnel and the top candidates as plain text."""
    lines = ["funnel: " + " → ".join(f"{name} {n}" for name, n in summary["funnel"])]
    if summary["top"]:
        lines.append(f"{'candidate':<36} {'formula':<12} {'E_hull':>8} {'E_MLIP':>8}  verdict")
        for r in summary["top"]:
            eh = "-" if r["e_above_hull"] is None else f"{r['e_above_hull']:.3f}"
            em = "-" if r["mlip_energy_per_atom"] is None else f"{r['mlip_energy_per_atom']:.3f}"
            v = r["verdict"] or "-"
            if r["moment_per_fu"] is not None:
                v += f" ({r['moment_per_fu']:.2f} μB/f.u.)"
            if r.get("spin_gap") is not None:
                which = "minority" if r.get("gapped_channel") == "down" else "majority"
                v += f", {which}-spin gap {r['spin_gap']:.2f} eV"
            if r.get("prototype") and r["verdict"]:
                v += f" [{r['prototype']}]"
            lines.append(f"{r['id']:<36} {str(r['formula']):<12} {eh:>8} {em:>8}  {v}")
    verdicts = Counter(r["verdict"] for r in summary["top"] if r["verdict"])
    if verdicts:
        lines.append(
            "DFT verdicts: "
            + ", ".join(
                f"{v} {n}" for v, n in sorted(verdicts.items(), key=lambda kv: (-kv[1], kv[0]))
            )
        )
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    return "\n".join(lines)


def check_references(settings: dict[str, Any], base_dir: Path) -> None:
    """Fail at submit time when the configured reference file does not exist."""
    st = ScreeningSettings.model_validate(settings)
    if st.references and st.references not in ("store", "mp-elements", "mp-or-elements"):
        path = Path(st.references).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise SpecError(f"stages.screening.references: {path}: no such file")
