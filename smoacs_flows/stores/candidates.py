"""One document per candidate, joined from the campaign's job outputs.

Each job output of a campaign contributes *sections* to the candidates it touched (the
proposal record, the prefilter verdict, the MLIP relaxation, the S.U.N. scores, the DFT
result). :func:`extract_sections` turns one job output into those sections;
:func:`assemble` merges the sections of every job of a campaign version into the candidate
documents, and decides their funnel stage and state (pending / failed / done).

Document fields are listed in docs/results.md.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

#: funnel order of the stages a candidate can reach
FUNNEL = ["proposed", "prefiltered", "relaxed", "stable", "sun", "dft"]
#: fields a DFT result contributes to the candidate (besides its per-spin gaps)
DFT_FIELDS = (
    "engine",
    "energy_per_atom",
    "efermi",
    "total_moment",
    "moment_per_fu",
    "site_moments",
    "spin_polarised",
    "formula",
    "reduced_formula",
)


def tag_version(tags: list[str] | None, campaign: str) -> int | None:
    """The version ``N`` from a ``smoacs:NAME:vN`` tag."""
    prefix = f"smoacs:{campaign}:v"
    for t in tags or []:
        if isinstance(t, str) and t.startswith(prefix) and t[len(prefix) :].isdigit():
            return int(t[len(prefix) :])
    return None


def dft_section(result: dict[str, Any], job_uuid: str) -> dict[str, Any]:
    """The flat DFT part of a candidate document from a DFTResult dict."""
    a = result.get("analysis") or {}
    out: dict[str, Any] = {k: result.get(k) for k in DFT_FIELDS}
    gaps = a.get("gaps") or {}
    for spin in ("up", "down"):
        g = gaps.get(spin)
        out[f"gap_{spin}"] = None if g is None else (g.get("gap") if g.get("gapped") else 0.0)
    p = a.get("polarisation")
    out.update(
        {
            "verdict": a.get("verdict"),
            "polarisation": p,
            "abs_polarisation": None if p is None else abs(float(p)),
            "dos_at_ef": a.get("dos_at_ef") or {},
            "half_metallic_gap": a.get("half_metallic_gap"),
            "gapped_channel": a.get("gapped_channel"),
            "warnings": list(a.get("warnings") or []),
            "e_above_hull": (result.get("hull") or {}).get("e_above_hull"),
            "hull_note": (result.get("hull") or {}).get("note"),
            "structure": result.get("structure"),
            "settings": result.get("settings") or {},
            "source": result.get("source"),
            "has_dos": bool(result.get("dos")),
            "job_uuid": job_uuid,
        }
    )
    return out


def chgnet_moments(rec: dict[str, Any]) -> dict[str, float | None]:
    """CHGNet's Σ|m_i| of a relaxed record, per cell and per formula unit (μB; None when the
    relaxation computed no site moments)."""
    from smoacs_flows.screening.halfmetal_rank import moment_per_fu

    site = (rec.get("screening") or {}).get("mlip_site_magmoms")
    return {
        "chgnet_moment": None if site is None else float(sum(abs(m) for m in site)),
        "chgnet_moment_per_fu": moment_per_fu(rec),
    }


def extract_sections(stage: str, output: Any, job_uuid: str) -> dict[str, dict[str, Any]]:
    """``{candidate_id: {section: data}}`` contributed by one job output of ``stage``.

    The special id ``"_campaign"`` carries campaign-wide facts (the summary job ran).
    """
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    if not isinstance(output, dict):
        return {}
    if stage == "propose":
        for rec in output.get("records", []):
            out[rec["id"]]["proposal"] = {
                "record": rec,
                "job_uuid": job_uuid,
                "versions": output.get("versions") or {},
            }
    elif stage == "prefilter":
        for rec in output.get("records", []):
            out[rec["id"]]["prefilter"] = {"passed": True, "job_uuid": job_uuid}
        for cid, why in (output.get("rejected") or {}).items():
            out[cid]["prefilter"] = {"passed": False, "reasons": list(why), "job_uuid": job_uuid}
    elif stage == "relax":
        for rec in output.get("records", []):
            scr = rec.get("screening") or {}
            out[rec["id"]]["relax"] = {
                "passed": True,
                "mlip": scr.get("mlip"),
                "structure": scr.get("relaxed"),
                "energy_per_atom": scr.get("mlip_energy_per_atom"),
                "converged": scr.get("relax_converged"),
                "steps": scr.get("relax_steps"),
                "wall_time": scr.get("relax_wall_time"),
                "spacegroup_initial": scr.get("spacegroup_initial"),
                "spacegroup_relaxed": scr.get("spacegroup_relaxed"),
                "prototype_kept": scr.get("prototype_kept"),
                **chgnet_moments(rec),
                "job_uuid": job_uuid,
                "versions": output.get("versions") or {},
            }
        for cid, why in (output.get("stage_rejected") or {}).items():
            out[cid]["relax"] = {"passed": False, "reasons": list(why), "job_uuid": job_uuid}
    elif stage == "sun":
        survivors = {r["id"] for r in output.get("records", [])}
        own = output.get("stage_rejected") or {}
        for cid, sc in (output.get("scores") or {}).items():
            out[cid]["sun"] = {
                **sc,
                # passed: survived every filter applied; sun: and those were the full S.U.N.
                "passed": sc.get("passed", cid in survivors),
                "sun": sc.get("sun", cid in survivors),
                "reasons": list(own.get(cid, [])),
                "job_uuid": job_uuid,
            }
        out["_campaign"]["sun_done"] = {
            "notes": list(output.get("notes", [])),
            "sun_label": output.get("sun_label"),
            "hull": output.get("hull"),
            "job_uuid": job_uuid,
        }
    elif stage == "dft" and output.get("candidate_id") and "engine" in output:
        # a DFTResult of a campaign candidate (a VASP chain's own analysis job has
        # candidate_id None: its tagged copy is the candidate's)
        out[output["candidate_id"]]["dft"] = dft_section(output, job_uuid)
    elif stage == "summary":
        out["_campaign"]["summary"] = {"funnel": output.get("funnel"), "job_uuid": job_uuid}
    return dict(out)


def _furthest(sec: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(furthest stage reached, rejection ``{stage, reasons}`` or None)."""
    stage = "proposed"
    pre, rel, sun = sec.get("prefilter"), sec.get("relax"), sec.get("sun")
    if pre is not None:
        if not pre["passed"]:
            return stage, {"stage": "prefilter", "reasons": pre.get("reasons", [])}
        stage = "prefiltered"
    if rel is not None:
        if not rel["passed"]:
            return stage, {"stage": "relax", "reasons": rel.get("reasons", [])}
        stage = "relaxed"
    if sun is not None:
        if sun.get("stable") is False:
            return stage, {"stage": "stability", "reasons": sun.get("reasons", [])}
        if sun.get("e_above_hull") is not None:
            stage = "stable"
        if not sun.get("passed", sun.get("sun")):
            return stage, {"stage": "uniqueness/novelty", "reasons": sun.get("reasons", [])}
        stage = "sun"
    if sec.get("dft") is not None:
        stage = "dft"
    return stage, None


def mongo_keys(obj: Any) -> Any:
    """``obj`` with dotted keys nested (``{"chgnet.energy": x}`` → ``{"chgnet": {"energy":
    x}}``), as MongoDB keys cannot contain dots; a leading ``$`` becomes ``_``."""
    if isinstance(obj, list):
        return [mongo_keys(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for k, v in obj.items():
        k = str(k)
        k = "_" + k[1:] if k.startswith("$") else k
        head, _, rest = k.partition(".")
        if rest:
            sub = out.setdefault(head, {})
            if isinstance(sub, dict):
                sub.update(mongo_keys({rest: v}))
                continue
            k = k.replace(".", "_")
        out[k] = mongo_keys(v)
    return out


def content_hash(doc: dict[str, Any]) -> str:
    """A stable hash of a candidate document (without bookkeeping fields)."""
    body = {k: v for k, v in doc.items() if k not in ("content_hash", "last_updated", "_id")}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def assemble(
    campaign: str,
    version: int,
    sections: dict[str, dict[str, Any]],
    failures: dict[str, dict[str, Any]] | None = None,
    fw_ids: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Candidate documents of one campaign version from the merged sections of its jobs.

    ``failures``: ``{candidate_id: {stage, reason, fw_id, state}}`` for fireworks of a
    candidate that fizzled or were lost (from the LaunchPad). A candidate without a proposal
    section (e.g. only a DFT result) still gets a document.
    """
    failures = failures or {}
    camp = sections.get("_campaign", {})
    finished = "summary" in camp
    docs = []
    for cid in sorted(k for k in sections if k != "_campaign"):
        sec = sections[cid]
        rec = mongo_keys(dict((sec.get("proposal") or {}).get("record") or {}))
        structure = rec.pop("structure", None)
        stage, rejected = _furthest(sec)
        rel, sun, dft = sec.get("relax") or {}, sec.get("sun") or {}, sec.get("dft")
        fail = failures.get(cid) if dft is None else None
        if dft is not None or rejected is not None:
            state = "done"
        elif fail is not None:
            state = "failed"
        elif finished:
            state = "done"  # screened but not chosen for DFT
        else:
            state = "pending"
        elements = rec.get("elements") or sorted(
            {sp["element"] for site in (structure or {}).get("sites", []) for sp in site["species"]}
        )
        final = (dft or {}).get("structure") or rel.get("structure") or structure
        doc = {
            "candidate_id": cid,
            "campaign": campaign,
            "version": version,
            "batch": rec.get("batch"),
            "template": rec.get("template_id"),
            "variant": rec.get("variant"),
            "formula": rec.get("formula") or (dft or {}).get("formula"),
            "reduced_formula": rec.get("reduced_formula") or (dft or {}).get("reduced_formula"),
            "elements": elements,
            "nelements": len(elements),
            "natoms": rec.get("n_sites"),
            "stage": stage,
            "rejected": rejected,
            "state": state,
            "failure": fail,
            "smoacs": rec or None,
            "structure": structure,
            "final_structure": final,
            "relax": (
                {k: v for k, v in rel.items() if k not in ("job_uuid", "passed", "versions")}
                if rel.get("passed")
                else None
            ),
            "e_above_hull": sun.get("e_above_hull"),
            "hull": sun.get("stability_reference"),
            "sun": (
                {
                    k: sun.get(k)
                    for k in (
                        "stable",
                        "unique",
                        "novel",
                        "sun",
                        "passed",
                        "hull_distance",
                        "e_above_hull_lower_bound",
                    )
                }
                if sun
                else None
            ),
            "dft": {k: v for k, v in dft.items() if k != "job_uuid"} if dft else None,
            "provenance": {
                "job_uuids": {
                    s: sec[s]["job_uuid"]
                    for s in ("proposal", "prefilter", "relax", "sun", "dft")
                    if s in sec
                },
                "dft_fw_id": (fw_ids or {}).get(cid),
                "seed": rec.get("seed"),
                "mlip": rel.get("mlip"),
                "dft_settings": (dft or {}).get("settings"),
                "versions": {
                    "proposal": (sec.get("proposal") or {}).get("versions") or {},
                    "relax": rel.get("versions") or {},
                },
            },
        }
        if doc["dft"]:
            doc["dft"].pop("settings", None)
        doc["content_hash"] = content_hash(doc)
        docs.append(doc)
    return docs


def merge_sections(per_job: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Merge the sections of several jobs (later jobs win for the same section)."""
    merged: dict[str, dict[str, Any]] = defaultdict(dict)
    for secs in per_job:
        for cid, s in secs.items():
            merged[cid].update(s)
    return dict(merged)
