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


def campaign_spec(lp: Any, campaign: str, version: int) -> dict[str, Any] | None:
    """The validated campaign a version ran (from its proposal firework), or None."""
    from smoacs_flows.makers.launchpad import lp_session

    with lp_session(lp, write=False):
        fw = lp.fireworks.find_one(
            {"spec.tags": f"smoacs:{campaign}:v{version}", "spec.stage": "propose"},
            {"spec._tasks": 1},
        )
    try:
        return fw["spec"]["_tasks"][0]["job"]["function_args"][0]["spec"]
    except (TypeError, KeyError, IndexError):
        return None


def excluded_elements(lp: Any, campaign: str, version: int) -> list[str]:
    """The elements a campaign version's exclusion masks removed (from its proposal job)."""
    from smoacs_flows.smoacs.exclusions import preset_elements

    spec = campaign_spec(lp, campaign, version)
    if spec is None:
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


def dft_settings(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The campaign's DFT stage with every default filled in (the engine's settings too)."""
    if spec is None:
        return None
    from smoacs_flows.makers.settings import DftSettings

    try:
        st = DftSettings.model_validate((spec.get("stages") or {}).get("dft") or {})
        out = st.model_dump(mode="json")
        if st.engine == "gpaw":
            from smoacs_flows.dft.gpaw_engine import GPAWSettings

            out["gpaw"] = GPAWSettings(**st.gpaw).model_dump(mode="json")
            out.pop("vasp", None)
        else:
            out.pop("gpaw", None)
        from smoacs_flows.dft.analysis import AnalysisSettings

        out["analysis"] = AnalysisSettings(**st.analysis).model_dump(mode="json")
        return out
    except Exception as exc:  # noqa: BLE001 - an old campaign's settings: show, don't fail
        return {"error": f"{type(exc).__name__}: {exc}"}


def proposal_outputs(job_store: Any, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The small parts (loss history, provenance, batches, variant) of the proposal jobs
    behind ``docs``, in job order."""
    uuids = sorted(
        {
            u
            for d in docs
            if (u := ((d.get("provenance") or {}).get("job_uuids") or {}).get("proposal"))
        }
    )
    keys = ["output.history", "output.provenance", "output.batches", "output.variant"]
    out = []
    job_store.connect()
    for u in uuids:
        doc = job_store.query_one({"uuid": u}, properties=keys)
        if doc and isinstance(doc.get("output"), dict):
            out.append(doc["output"])
    return out


def loss_curves(outputs: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """``{batch label: [[mean, min] per step]}`` of the proposal jobs' loss histories."""
    curves = {}
    for o in outputs:
        var = f"{o['variant']} " if o.get("variant") else ""
        for b, hist in (o.get("history") or {}).items():
            curves[f"{var}b{int(b):03d}"] = hist
    return curves


def campaign_provenance(
    spec: dict[str, Any] | None, outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The report's provenance: campaign YAML, code version, predictor weights, DFT settings."""
    import yaml

    recorded = next((o["provenance"] for o in outputs if o.get("provenance")), {})
    return {
        "campaign_yaml": yaml.safe_dump(spec, sort_keys=False) if spec else None,
        "code": recorded.get("code"),
        "predictors": recorded.get("predictors"),
        "dft_settings": dft_settings(spec),
    }


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
    outputs = proposal_outputs(job_store, docs)
    return write_report(
        docs,
        out,
        title=f"{campaign} v{version}",
        dos=dos_arrays(job_store, docs),
        excluded=excluded_elements(lp, campaign, version),
        provenance=campaign_provenance(campaign_spec(lp, campaign, version), outputs),
        loss_curves=loss_curves(outputs),
        compare_docs=cmp_docs,
        compare_label=compare,
    )
