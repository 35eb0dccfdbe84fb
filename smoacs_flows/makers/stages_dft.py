"""The DFT-side stage functions: which S.U.N. survivors go to DFT and from which structure,
the GPAW chain on one of them, and the campaign summary (funnel and top candidates)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pymatgen.core import Structure

from smoacs_flows.makers.settings import DftSettings
from smoacs_flows.makers.stages_common import as_structure


def rank_key(rec: dict[str, Any], rank_by: str) -> float:
    """Sort key of a survivor (lower is better; missing values last)."""
    if rank_by == "halfmetal":
        from smoacs_flows.screening.halfmetal_rank import halfmetal_score

        return halfmetal_score(rec)
    scr = rec.get("screening") or {}
    v = {
        # the signed distance orders candidates on the hull too (E_hull is 0 for all of them)
        "e_above_hull": scr.get("hull_distance", scr.get("e_above_hull")),
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
        *([("stable", c.get("stable", 0))] if sun.get("hull") else []),
        (sun.get("sun_label") or "S.U.N.", c.get("sun", 0)),
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
