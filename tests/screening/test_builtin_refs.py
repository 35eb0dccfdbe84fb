"""Shipped MP elemental references, the mp-or-elements keyword, and the half-metal ranking."""

from __future__ import annotations

import gzip
import json

import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.makers import stages
from smoacs_flows.screening import builtin_refs
from smoacs_flows.screening.halfmetal_rank import halfmetal_score, rank_halfmetal
from smoacs_flows.screening.stability import mlip_entry

from ._data import MP_ELEMENTS


def _shared() -> dict:
    with gzip.open(MP_ELEMENTS, "rt") as fh:
        return json.load(fh)


def test_shipped_references_are_the_shared_mp_file() -> None:
    """The package copy holds the same 89 MP elemental entries as the shared data file."""
    shared = _shared()
    ours = builtin_refs.elemental_references()
    assert len(ours) == len(shared) == 89
    by_el = {e.composition.elements[0].symbol: e for e in ours}
    for el in ("Fe", "Mn", "Sb", "O", "Co"):
        raw = shared[el]
        assert by_el[el].entry_id == raw["entry_id"]
        assert by_el[el].uncorrected_energy == pytest.approx(raw["energy"])


def test_keyword_without_key_falls_back_to_elements(monkeypatch) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    refs, label = builtin_refs.keyword_references("mp-or-elements", ["Fe-Sb"])
    assert label == builtin_refs.LABEL_ELEMENTS and len(refs) == 89
    assert stages.reference_label("mp-or-elements") == builtin_refs.LABEL_ELEMENTS
    monkeypatch.setenv("MP_API_KEY", "x" * 32)
    assert stages.reference_label("mp-or-elements") == builtin_refs.LABEL_MP
    assert stages.reference_label("mp-elements") == builtin_refs.LABEL_ELEMENTS


def test_sun_against_elements_is_a_formation_energy(smoacs_home, monkeypatch) -> None:
    """e_above_hull against the shipped elements = E − Σ x_i E_i per atom (by hand)."""
    monkeypatch.delenv("MP_API_KEY", raising=False)
    shared = _shared()
    s = Structure(Lattice.cubic(4.2), ["Ni", "Sn"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    e_pa = -5.0
    rec = {
        "id": "c0",
        "structure": s.as_dict(),
        "screening": {"relaxed": s.as_dict(), "mlip_energy_per_atom": e_pa},
    }
    settings = {"references": "mp-elements", "relax_references": False, "e_hull_max": 10.0}
    out = stages.sun_filter([{"records": [rec], "counts": {}}], settings, ".")
    scr = out["records"][0]["screening"]
    corrected = mlip_entry(s, e_pa, "chgnet").energy_per_atom  # no MP2020 correction for Ni-Sn
    mu = {el: shared[el]["energy"] / sum(shared[el]["composition"].values()) for el in ("Ni", "Sn")}
    e_form = corrected - 0.5 * (mu["Ni"] + mu["Sn"])
    assert e_form < 0  # below the elements: E_hull is 0 by definition, the distance signed
    assert scr["hull_distance"] == pytest.approx(e_form, abs=1e-9)
    assert scr["e_above_hull"] == 0.0
    assert scr["stability_reference"] == builtin_refs.LABEL_ELEMENTS
    assert any("elements only" in n for n in out["notes"])
    # an elements-only hull is never called S.U.N.
    assert "S.U.N." not in out["sun_label"] and "elements" in out["sun_label"]
    assert out["records"][0]["screening"]["sun"] is False


def _rec(cid: str, moments: list[float], e_hull: float, n_el: int) -> dict:
    return {
        "id": cid,
        "n_elements": n_el,
        "formula_units": 1,
        "screening": {"mlip_site_magmoms": moments, "e_above_hull": e_hull},
    }


def test_halfmetal_ranking_prefers_magnetic_integer_few_elements_low_energy() -> None:
    best = _rec("best", [2.0, 1.0], -0.2, 2)  # 3.0 μB, integer, binary, bound
    non_integer = _rec("nonint", [1.5, 1.0], -0.2, 2)  # 2.5 μB
    nonmagnetic_but_bound = _rec("oxide", [0.0, 0.0], -3.0, 2)  # energy clipped at the floor
    more_elements = _rec("quat", [2.0, 1.0], -0.2, 4)
    higher_energy = _rec("hot", [2.0, 1.0], 0.05, 2)
    ranked = rank_halfmetal(
        [nonmagnetic_but_bound, more_elements, non_integer, higher_energy, best]
    )
    assert ranked[0]["id"] == "best"
    assert ranked[-1]["id"] == "oxide"
    assert halfmetal_score(best) < halfmetal_score(more_elements) < halfmetal_score(non_integer)
    assert halfmetal_score(best) < halfmetal_score(higher_energy)
    assert stages.rank_key(best, "halfmetal") == halfmetal_score(best)
