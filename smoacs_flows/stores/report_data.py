"""Gather what ``smoacs-flows report`` draws: candidate documents, DOS arrays, exclusions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smoacs_flows.stores.report import MAX_DOS_PLOTS, write_report
from smoacs_flows.stores.results import QueryError, ResultsStore


def campaign_docs(
    results: ResultsStore, campaign: str, version: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """(version, documents) of a campaign version (the latest by default)."""
    version = results.versions(campaign, version)[campaign]
    with results.reading():
        docs = list(results.candidates.query({"campaign": campaign, "version": version}))
    for d in docs:
        d.pop("_id", None)
    return version, docs


def excluded_elements(lp: Any, campaign: str, version: int) -> list[str]:
    """The elements a campaign version's exclusion masks removed (from its proposal job)."""
    from smoacs_flows.makers.launchpad import lp_session
    from smoacs_flows.smoacs.exclusions import preset_elements

    with lp_session(lp, write=False):
        fw = lp.fireworks.find_one(
            {"spec.tags": f"smoacs:{campaign}:v{version}", "spec.stage": "propose"},
            {"spec._tasks": 1},
        )
    try:
        spec = fw["spec"]["_tasks"][0]["job"]["function_args"][0]["spec"]
    except (TypeError, KeyError, IndexError):
        return []
    out: list[str] = []
    for item in spec.get("exclude") or []:
        try:
            out += preset_elements(item)
        except Exception:  # noqa: BLE001 - not a preset: an element symbol
            out.append(item)
    return sorted(set(out))


def dos_arrays(job_store: Any, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{candidate_id: {energies, up, down, efermi}}`` of the DFT'd candidates: half-metals
    first (largest half-metallic gap first), then the others."""
    hms = [d for d in docs if (d.get("dft") or {}).get("has_dos")]
    hms.sort(
        key=lambda d: (
            d["dft"].get("verdict") != "half_metal",
            -((d["dft"].get("half_metallic_gap")) or 0.0),
        )
    )
    out = {}
    job_store.connect()
    for d in hms[:MAX_DOS_PLOTS]:
        uuid = ((d.get("provenance") or {}).get("job_uuids") or {}).get("dft")
        if not uuid:
            continue
        res = job_store.get_output(uuid, load=True)
        dos = (res or {}).get("dos") if isinstance(res, dict) else None
        if dos:
            from smoacs_flows.dft.dos import dos_data

            # a pymatgen CompleteDos dict, or the per-spin arrays older results stored
            arrays = dos_data(dos)
            if arrays is not None:
                out[d["candidate_id"]] = {**arrays.model_dump(), "efermi": res.get("efermi")}
    return out


def report_for_campaign(
    results: ResultsStore,
    job_store: Any,
    lp: Any,
    campaign: str,
    version: int | None,
    out: str | Path,
    compare: str | None = None,
) -> Path:
    """Write the HTML report of a campaign version (``compare``: a second campaign whose
    element frequencies are shown beside it, e.g. the same run without exclusion masks)."""
    version, docs = campaign_docs(results, campaign, version)
    cmp_docs = None
    if compare:
        if compare not in results.campaigns():
            raise QueryError(f"--compare: unknown campaign {compare!r} in the results store")
        cmp_docs = campaign_docs(results, compare)[1]
    return write_report(
        docs,
        out,
        title=f"{campaign} v{version}",
        dos=dos_arrays(job_store, docs),
        excluded=excluded_elements(lp, campaign, version),
        compare_docs=cmp_docs,
        compare_label=compare,
    )
