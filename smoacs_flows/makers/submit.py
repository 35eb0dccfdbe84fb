"""Submit a campaign to a FireWorks LaunchPad: validate, build the Flow, convert, add.

Everything that can be checked is checked before the LaunchPad is touched (campaign schema,
stage settings, templates and oxidation patterns, reference file, LaunchPad reachability), so
an invalid campaign or an unreachable server leaves no partial workflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireworks import LaunchPad, Workflow
from jobflow import Flow

from smoacs_flows.campaign import Campaign, load_campaign
from smoacs_flows.errors import SmoacsError
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, describe, lp_session, open_launchpad

#: collection (in the LaunchPad's database) holding one version counter per campaign
VERSIONS_COLLECTION = "smoacs_campaign_versions"


def campaign_tag(name: str, version: int | None = None) -> str:
    """The FireWorks tag of a campaign (``smoacs:NAME``) or of one version (``...:vN``)."""
    return f"smoacs:{name}" if version is None else f"smoacs:{name}:v{version}"


@dataclass
class Submission:
    """What ``submit`` added."""

    campaign: str
    version: int
    tag: str
    launchpad: str
    fw_ids: list[int]
    categories: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_fireworks(self) -> int:
        """Fireworks added (dynamic DFT fireworks come later)."""
        return len(self.fw_ids)


def campaign_flow(campaign: Campaign) -> Flow:
    """The campaign's Flow, after every check a worker would trip on (stage settings,
    templates and oxidation patterns, reference file); reads files, writes nothing."""
    from smoacs_flows.makers.core import HalfMetalCampaignMaker

    return HalfMetalCampaignMaker().make(campaign)


def build_workflow(campaign: Campaign, store: Any = None, flow: Flow | None = None) -> Workflow:
    """The campaign's FireWorks workflow (``store`` None: the worker's jobflow JOB_STORE).

    ``flow``: the campaign's Flow as built by :func:`campaign_flow` and then modified
    (atomate2 powerups, ``update_metadata``, ...); default: built here.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    flow = flow if flow is not None else campaign_flow(campaign)
    return flow_to_workflow(
        flow, store=store, name=campaign.name, metadata={"smoacs_campaign": campaign.name}
    )


def firework_store(
    lp: LaunchPad, source: str | Path | None = None, resolved: tuple[Any, str, str] | None = None
) -> tuple[Any, str]:
    """The JobStore to write into every firework (None: each worker's jobflow ``JOB_STORE``)
    and one line saying which and why.

    ``--store``/``$SMOACS_JOB_STORE`` are written into the fireworks; so is the embedded
    default for the embedded LaunchPad. A store from jobflow's settings file is not (workers
    read the same ``JOBFLOW_CONFIG_FILE``; no credentials in firework specs), nor is the
    embedded default for a MongoDB LaunchPad (remote workers could not reach it).
    ``resolved``: :func:`~smoacs_flows.stores.jobstore.resolve_job_store`'s answer, if known.
    """
    from smoacs_flows.stores.jobstore import resolve_job_store

    store, origin, line = resolved if resolved is not None else resolve_job_store(source)
    if origin in ("option", "env") or (origin == "embedded" and isinstance(lp, EmbeddedLaunchPad)):
        return store, line + ", written into every firework"
    if origin == "jobflow":
        return None, line + "; not written into the fireworks: workers use their own JOB_STORE"
    return None, (
        "JobStore: none written into the fireworks: each worker uses its jobflow JOB_STORE "
        "(JOBFLOW_CONFIG_FILE on the worker; template stores/jobflow.yaml)"
    )


def open_targets(
    launchpad: str | Path | None = None, store: str | Path | None = None
) -> tuple[LaunchPad, Any, list[str]]:
    """The LaunchPad and the firework store of a submission (see :func:`firework_store`),
    plus the lines saying which and why, opened in the order that lets bad input fail first.

    A LaunchPad file is read (a MongoDB server pinged, nothing written) before the store file;
    the embedded LaunchPad, which writes its file when opened, comes after the store file.
    """
    from smoacs_flows.makers.discovery import find_launchpad_file
    from smoacs_flows.makers.launchpad import resolve_launchpad
    from smoacs_flows.stores.jobstore import resolve_job_store

    if find_launchpad_file(launchpad).path is not None:
        lp, lp_line = resolve_launchpad(launchpad)
        st, st_line = firework_store(lp, store)
    else:
        resolved = resolve_job_store(store)
        lp, lp_line = resolve_launchpad(launchpad)
        st, st_line = firework_store(lp, store, resolved)
    return lp, st, [lp_line, st_line]


def existing_versions(lp: LaunchPad, name: str) -> list[int]:
    """Versions of a campaign already on the LaunchPad."""
    docs = lp.workflows.find({"metadata.smoacs_campaign": name}, {"metadata": 1})
    return sorted(int(d["metadata"].get("smoacs_version", 1)) for d in docs)


def _seed_counter(coll: Any, name: str, floor: int) -> None:
    """Create the counter of ``name`` or raise it to ``floor`` (versions submitted before the
    counter existed), atomically."""
    from pymongo.errors import DuplicateKeyError

    for _ in range(3):  # two first upserts of one _id race on MongoDB: one gets a duplicate
        try:
            coll.update_one({"_id": name}, {"$max": {"version": floor}}, upsert=True)
            return
        except DuplicateKeyError:
            continue
    raise SmoacsError(f"campaign {name!r}: cannot create its version counter (retried 3 times)")


def allocate_version(lp: LaunchPad, name: str, new_version: bool) -> int:
    """The next version of a campaign, claimed atomically on the LaunchPad's database.

    A counter document per campaign (``{_id: name, version: N}`` in the
    :data:`VERSIONS_COLLECTION` collection) is incremented with one ``find_one_and_update``,
    so concurrent submitters (processes on other machines included) never get the same
    version. Without ``new_version`` the claim only succeeds while nobody has claimed a version
    above those on the LaunchPad, so of two racing plain submits one is refused.
    """
    from pymongo import ReturnDocument

    versions = existing_versions(lp, name)
    if versions and not new_version:
        raise SmoacsError(
            f"campaign {name!r} is already on the {describe(lp)} (version "
            f"{versions[-1]}); use --new-version to submit it again"
        )
    floor = versions[-1] if versions else 0
    coll = lp.db[VERSIONS_COLLECTION]
    _seed_counter(coll, name, floor)
    flt: dict[str, Any] = {"_id": name} if new_version else {"_id": name, "version": floor}
    doc = coll.find_one_and_update(
        flt, {"$inc": {"version": 1}}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        cur = (coll.find_one({"_id": name}) or {}).get("version")
        raise SmoacsError(
            f"campaign {name!r}: version {cur} was already claimed on the {describe(lp)} "
            "(another submit, or workflows since deleted); use --new-version to submit it again"
        )
    return int(doc["version"])


def ensure_initialised(lp: LaunchPad) -> None:
    """Initialise a FireWorks database that was never reset (as ``lpad reset`` would), only
    when it holds nothing: no workflow, firework or launch. FireWorks itself fails on such a
    database with "Could not get next FW id"."""
    if lp.fw_id_assigner.find_one({}) is not None:
        return
    held = {
        name: coll.count_documents({})
        for name, coll in (
            ("workflows", lp.workflows),
            ("fireworks", lp.fireworks),
            ("launches", lp.launches),
        )
    }
    if any(held.values()):
        what = ", ".join(f"{n} {k}" for k, n in held.items() if n)
        raise SmoacsError(
            f"the {describe(lp)} holds {what} but no firework id counter (fw_id_assigner): "
            "it was not made by FireWorks, or was damaged; it is left as it is (lpad reset "
            "would wipe it)"
        )
    lp.reset("", require_password=False, max_reset_wo_password=0)


def release_version(lp: LaunchPad, name: str, version: int) -> None:
    """Give back a version claimed by a submit that then failed (only while it is still the
    latest claim, so a version someone else claimed since is never reused)."""
    import contextlib

    with contextlib.suppress(Exception):  # the submit's own error is the one to report
        lp.db[VERSIONS_COLLECTION].update_one(
            {"_id": name, "version": version}, {"$inc": {"version": -1}}
        )


def submit(
    campaign: Campaign | str | Path,
    launchpad: LaunchPad | str | Path | None = None,
    new_version: bool = False,
    store: Any = None,
    flow: Flow | None = None,
) -> Submission:
    """Validate and add a campaign workflow; refuses a campaign name already on the LaunchPad
    unless ``new_version``. ``launchpad`` None = the embedded one; ``store`` None = the
    embedded JobStore for the embedded LaunchPad, the worker's ``JOB_STORE`` otherwise;
    ``flow`` = the campaign's Flow with powerups applied (see :func:`build_workflow`)."""
    t0 = time.perf_counter()
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    if flow is None:  # every input check before the LaunchPad (or a store) is opened
        flow = campaign_flow(campaign)
    lp = launchpad if isinstance(launchpad, LaunchPad) else open_launchpad(launchpad)
    if store is None:
        store = firework_store(lp)[0]
    wf = build_workflow(campaign, store, flow)
    t_build = time.perf_counter() - t0
    cats: dict[str, int] = {}
    for fw in wf.fws:
        c = fw.spec.get("_category", "")
        cats[c] = cats.get(c, 0) + 1
    t1 = time.perf_counter()
    with lp_session(lp):
        ensure_initialised(lp)
        version = allocate_version(lp, campaign.name, new_version)
        tags = [campaign_tag(campaign.name), campaign_tag(campaign.name, version)]
        wf.metadata["smoacs_version"] = version
        wf.metadata["tags"] = tags
        wf.name = f"{campaign.name} v{version}"
        for fw in wf.fws:
            fw.spec["tags"] = list(tags)
        try:
            mapping = lp.add_wf(wf)
        except BaseException:
            release_version(lp, campaign.name, version)  # a failed submit burns no version
            raise
    t_add = time.perf_counter() - t1
    return Submission(
        campaign=campaign.name,
        version=version,
        tag=tags[1],
        launchpad=describe(lp),
        fw_ids=sorted(mapping.values()),
        categories=cats,
        timings={"build": t_build, "add": t_add, "total": time.perf_counter() - t0},
    )
