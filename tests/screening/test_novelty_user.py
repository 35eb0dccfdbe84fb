"""A user's own known structures join the novelty check (``novelty_references``)."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from smoacs_flows.errors import SpecError
from smoacs_flows.makers import stages


def _elements_file(tmp_path):
    fe = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    al = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.04), ["Al"], [[0, 0, 0]])
    refs = [
        ComputedStructureEntry(
            s, -5.0 * len(s), entry_id=f"ref-{i}", parameters={"run_type": "GGA"}
        )
        for i, s in enumerate((fe, al))
    ]
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([e.as_dict() for e in refs]))
    return path


def _outputs():
    s = Structure(Lattice.cubic(2.95), ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0.52]])
    rec = {"id": "c0", "screening": {"relaxed": s.as_dict(), "mlip_energy_per_atom": -6.0}}
    return [{"records": [rec], "rejected": {}, "counts": {"relaxed": 1}}]


def test_user_structures_make_a_candidate_known(tmp_path):
    """B2 FeAl is novel against the elements alone, and not once the user's CIF of B2 FeAl
    (a slightly different cell: StructureMatcher decides) is among the known structures."""
    refs = str(_elements_file(tmp_path))
    base = {"references": refs, "relax_references": False, "e_hull_max": 10.0}
    out = stages.sun_filter(_outputs(), base, str(tmp_path))
    assert out["scores"]["c0"]["novel"] is True and out["counts"]["sun"] == 1
    known = tmp_path / "known"
    known.mkdir()
    Structure(Lattice.cubic(2.91), ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(known / "FeAl_B2.cif")
    )
    out = stages.sun_filter(_outputs(), {**base, "novelty_references": "known"}, str(tmp_path))
    assert out["scores"]["c0"]["novel"] is False and out["counts"]["sun"] == 0
    assert out["rejected"]["c0"] == ["matches reference user:FeAl_B2"]
    assert any("novelty also against 1 structures" in n for n in out["notes"])


def test_missing_user_structures_fail_at_submit_time(tmp_path):
    settings = {"references": str(_elements_file(tmp_path)), "novelty_references": "nope"}
    with pytest.raises(SpecError, match="stages.screening.novelty_references: .*nope"):
        stages.check_references(settings, tmp_path)
