"""MLIP relaxation of the reference phases is its own gpu job before S.U.N., on the campaign's
device; ``references: store`` fetches missing chemical systems from a configured source, or
fails naming them and the fix."""

from __future__ import annotations

import bz2
import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.makers import stages
from smoacs_flows.makers.core import HalfMetalCampaignMaker
from smoacs_flows.screening.references import ReferenceStore
from tests.makers._campaign import ROOT, tiny_campaign


def _phases() -> list[ComputedStructureEntry]:
    """Fe (bcc), Al (fcc) and FeAl (B2) with made-up DFT energies (the MLIP replaces them)."""
    fe = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    al = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.04), ["Al"], [[0, 0, 0]])
    feal = Structure(Lattice.cubic(2.91), ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return [
        ComputedStructureEntry(
            s, -5.0 * len(s), entry_id=f"ref-{i}", parameters={"run_type": "GGA"}
        )
        for i, s in enumerate((fe, al, feal))
    ]


def _refs_file(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([e.as_dict() for e in _phases()]))
    return path


def _relaxed_outputs() -> list[dict]:
    s = Structure(Lattice.cubic(2.95), ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0.52]])
    rec = {
        "id": "t-b000-c0000",
        "screening": {"relaxed": s.as_dict(), "mlip_energy_per_atom": -6.0, "mlip": "chgnet"},
    }
    return [{"records": [rec], "rejected": {}, "counts": {"relaxed": 1}}]


def _pymatgen_e_hull(entry_dicts: list[dict]) -> float:
    """The candidate of :func:`_relaxed_outputs` against these entries, by pymatgen alone."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.entries.computed_entries import ComputedEntry

    refs = [ComputedStructureEntry.from_dict(d) for d in entry_dicts]
    cand = ComputedEntry("FeAl", -6.0 * 2)
    return float(PhaseDiagram(refs).get_e_above_hull(cand, allow_negative=True))


def _flow(tmp_path, screening: dict, **extra):
    data = tiny_campaign(stages={"screening": screening}, **extra)
    return HalfMetalCampaignMaker().make(campaign_from_dict(data, base_dir=tmp_path))


def test_reference_relaxation_is_a_gpu_job_before_sun(tmp_path):
    refs = _refs_file(tmp_path)
    flow = _flow(tmp_path, {"references": str(refs), "relax_references": True}, device="auto")
    by_name = {j.name: j for j in flow.jobs}
    ref = by_name["reference relax"]
    assert ref.config.manager_config["_category"] == "gpu"
    assert ref.metadata["stage"] == "references"
    # S.U.N. (cpu) takes the reference job's output; it relaxes nothing itself
    sun = by_name["sun"]
    assert sun.config.manager_config["_category"] == "cpu"
    assert ref.uuid in {r.uuid for r in sun.input_references}
    # every relaxation job gets the campaign's device ('auto': CUDA when present)
    assert ref.maker.settings["device"] == "auto"
    assert by_name["relax 000"].maker.settings["device"] == "auto"
    # no reference job without relaxed references, and none without references
    for screening in ({"references": str(refs), "relax_references": False}, {}):
        names = {j.name for j in _flow(tmp_path, screening).jobs}
        assert "reference relax" not in names and "sun" in names


def test_screening_device_overrides_the_campaigns(tmp_path):
    flow = _flow(tmp_path, {"device": "cpu"}, device="auto")
    relax = next(j for j in flow.jobs if j.name == "relax 000")
    assert relax.maker.settings["device"] == "cpu"
    with pytest.raises(SpecError, match=r"stages.screening.device: .*'gpu0' is not a torch"):
        _flow(tmp_path, {"device": "gpu0"})


def test_reference_job_relaxes_and_sun_uses_its_entries(tmp_path, monkeypatch):
    settings = {"mlip": "chgnet", "steps": 2, "fmax": 0.5, "device": "cpu"}
    settings["references"] = str(_refs_file(tmp_path))
    out = stages.reference_energies(_relaxed_outputs(), settings, str(tmp_path))
    assert out["chemsys"] == ["Al-Fe"] and out["counts"]["mlip"] == 3
    energies = {d["entry_id"]: d["energy"] / 2 for d in out["entries"] if "Al" in str(d)}
    assert energies and all(e != -5.0 for e in energies.values())  # MLIP, not the file's

    import smoacs_flows.screening.relax as relax_mod

    def no_relax(*a, **k):
        raise AssertionError("S.U.N. must not relax references when the job did")

    monkeypatch.setattr(relax_mod, "relax", no_relax)
    sun = stages.sun_filter(_relaxed_outputs(), settings, str(tmp_path), out)
    scores = sun["scores"]["t-b000-c0000"]
    # pymatgen's hull of the job's MLIP reference entries, the candidate at -6 eV/atom
    assert scores["e_above_hull"] == pytest.approx(_pymatgen_e_hull(out["entries"]), abs=1e-6)
    assert any("reference energies (chgnet job)" in n for n in sun["notes"])


def test_store_references_missing_without_source_fail_naming_systems(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("SMOACS_ALEXANDRIA_URLS", raising=False)
    settings = {"mlip": "chgnet", "references": "store", "relax_references": False}
    with pytest.raises(SmoacsError) as exc:
        stages.sun_filter(_relaxed_outputs(), settings, str(tmp_path))
    msg = str(exc.value)
    assert "Al-Fe" in msg and "refs fetch" in msg and "MP_API_KEY" in msg
    assert "SMOACS_ALEXANDRIA_URLS" in msg


def test_store_references_missing_are_fetched_from_a_configured_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    dump = tmp_path / "convex_hull_pbe.json.bz2"
    with bz2.open(dump, "wt", encoding="utf-8") as fh:
        json.dump({"entries": [e.as_dict() for e in _phases()]}, fh)
    monkeypatch.setenv("SMOACS_ALEXANDRIA_URLS", str(dump))
    settings = {"mlip": "chgnet", "references": "store", "relax_references": False}
    sun = stages.sun_filter(_relaxed_outputs(), settings, str(tmp_path))
    # the fetched phases (all at -5 eV/atom, no MP2020 correction for Fe/Al in GGA): the
    # candidate at -6 eV/atom lies 1 eV/atom below their hull
    expected = _pymatgen_e_hull([e.as_dict() for e in _phases()])
    assert expected == pytest.approx(-1.0)
    score = sun["scores"]["t-b000-c0000"]
    assert score["hull_distance"] == pytest.approx(expected, abs=1e-6)
    assert score["e_above_hull"] == 0.0  # on (below) the hull: E_hull is 0 by definition
    with ReferenceStore() as store:
        assert {"Al", "Fe", "Al-Fe"} <= set(store.chemsys_list())
    assert ROOT.is_dir()
