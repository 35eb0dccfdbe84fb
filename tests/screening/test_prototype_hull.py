"""The offline MLIP prototype hull: the library's structure types, the hull arithmetic against
pymatgen's PhaseDiagram, and the issue's four structures through the S.U.N. stage."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from smoacs_flows.screening.prototypes import BINARY, LIBRARY, TERNARY, decorate, phases_for
from tests._env import with_smoacs_home


@pytest.mark.parametrize("proto", LIBRARY, ids=lambda p: p.name)
def test_prototype_is_its_structure_type(proto):
    """Each prototype, with distinct species on its roles, has its archetype's space group
    (spglib) and its archetype's anonymous formula (AB, AB2, AB3, ABC, AB2C, ABC3)."""
    species = dict(zip(proto.roles, ["Na", "Cl", "K"]))
    s = proto.structure(species)
    assert SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number() == proto.spacegroup
    assert s.composition.anonymized_formula == Composition(proto.archetype).anonymized_formula


def test_decorations_are_distinct_and_complete():
    """Rock salt once (A/B swap is the same crystal), NiAs twice, perovskite six times; every
    decoration holds exactly the system's elements and no two atoms overlap."""
    names = [ph.prototype for ph in phases_for("Mg-O")]
    assert names.count("rocksalt_B1") == 1 and names.count("NiAs_B81") == 2
    assert sum(p.name == "perovskite_E21" for p in TERNARY) == 1
    assert len(decorate(TERNARY[-1], ["Ca", "Ti", "O"])) == 6
    for ph in phases_for("Al-As-Cr") + phases_for("Al-As"):
        els = {el.symbol for el in ph.structure.composition.elements}
        assert els == set(ph.chemsys.split("-"))
        assert ph.structure.distance_matrix[ph.structure.distance_matrix > 0].min() > 1.0
    assert len(phases_for("Al-As")) == sum(len(decorate(p, ["Al", "As"])) for p in BINARY)


def test_hull_agrees_with_pymatgen_phase_diagram():
    """``judge`` on a known phase set: E_hull equals pymatgen's e_above_hull with the candidate
    itself on the diagram (≥ 0 by definition), the signed distance equals it against the
    references alone, and a candidate outside every prototype system is a lower bound."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from smoacs_flows.screening.prototype_hull import covered_systems, judge
    from smoacs_flows.screening.stability import Hull

    refs = [
        ComputedEntry("Fe", -8.0, entry_id="Fe"),
        ComputedEntry("O2", -10.0, entry_id="O"),
        ComputedEntry("FeO", -20.0, entry_id="FeO"),
        ComputedEntry("Fe2O3", -48.0, entry_id="Fe2O3"),
    ]
    hull = Hull(refs)
    for formula, energy in (("Fe3O4", -66.0), ("Fe3O4", -60.0), ("FeO2", -22.0), ("FeO", -21.0)):
        cand = ComputedEntry(formula, energy, entry_id="x")
        v = judge(cand, hull, 0.1, covered={"Fe", "O", "Fe-O"})
        with_cand = PhaseDiagram([*refs, cand]).get_e_above_hull(cand)
        signed = PhaseDiagram(refs).get_e_above_hull(cand, allow_negative=True)
        assert v.e_above_hull == pytest.approx(with_cand, abs=1e-9)
        assert v.hull_distance == pytest.approx(signed, abs=1e-9)
        assert v.e_above_hull >= 0 and not v.lower_bound
    far = judge(ComputedEntry("FeO2", -10.0), hull, 0.1, covered={"Fe", "O"})
    assert far.lower_bound and not far.stable and "≥" in (far.reason(0.1) or "")
    # a quaternary whose ternary and binary subsystems all have phases is no lower bound
    quat = Hull([*refs, *(ComputedEntry(x, -8.0) for x in ("Mn", "Sb"))])
    covered = covered_systems(["Fe-Mn-O-Sb"])
    assert len(covered) == 14 and "Fe-Mn-O-Sb" not in covered
    q = judge(ComputedEntry("FeMnSbO", -30.0), quat, 0.1, covered=covered)
    assert not q.lower_bound
    # two nonmetals: their compounds are not in the library, so only a lower bound
    hf = Hull([ComputedEntry("H2", -7.0), ComputedEntry("F2", -4.0)])
    v = judge(ComputedEntry("HF", -8.0), hf, 0.1, covered={"H", "F", "F-H"})
    assert v.stable and v.lower_bound


# ------------------------------------------------------------------ the issue's four structures


def _four() -> dict[str, Structure]:
    a = 3.9
    wz = Structure(
        Lattice.hexagonal(a, 1.633 * a),
        ["Al", "Cr", "As", "As"],
        [(1 / 3, 2 / 3, 0), (2 / 3, 1 / 3, 0.5), (1 / 3, 2 / 3, 0.375), (2 / 3, 1 / 3, 0.875)],
    )
    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [(0, 0, 0), (0.5, 0.5, 0.5)])
    alas = Structure.from_spacegroup(
        "F-43m", Lattice.cubic(5.66), ["Al", "As"], [(0, 0, 0), (0.25, 0.25, 0.25)]
    )
    mgo = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [(0, 0, 0), (0.5, 0.5, 0.5)]
    )
    return {"wz-AlCrAs2": wz, "bcc-Fe": fe, "zb-AlAs": alas, "rs-MgO": mgo}


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The four structures CHGNet-relaxed, then the S.U.N. stage on the offline default
    (``mp-or-elements`` without MP_API_KEY) with the shipped hull cache switched off, so every
    phase is relaxed here; then the reference job once more on the same store."""
    from smoacs_flows.makers.settings import ScreeningSettings
    from smoacs_flows.makers.stages_sun import reference_energies, sun_filter
    from smoacs_flows.screening import prototype_hull
    from smoacs_flows.screening.relax import relax

    structs = _four()
    res = relax(list(structs.values()), "chgnet", "torchsim", 0.05, 300, "FIRE", device="cpu")
    recs = [
        {"id": k, "screening": {"relaxed": r.structure.as_dict(), "mlip_energy_per_atom": e}}
        for k, r in zip(structs, res)
        for e in [r.energy_per_atom]
    ]
    outs = [{"records": recs, "counts": {"relaxed": len(recs)}}]
    st = ScreeningSettings(references="mp-or-elements", e_hull_max=0.1).model_dump()
    mp = pytest.MonkeyPatch()
    mp.delenv("MP_API_KEY", raising=False)
    mp.setattr(prototype_hull, "shipped_cache", lambda mlip: {})
    home = tmp_path_factory.mktemp("home")
    with with_smoacs_home(home):
        refs = reference_energies(outs, st, ".")
        out = sun_filter(outs, st, ".", refs)
        again = reference_energies(outs, st, ".")
    mp.undo()
    return refs, out, again, home


def test_offline_hull_verdicts(judged):
    """bcc Fe, zinc-blende AlAs and rock-salt MgO sit on the offline hull; wurtzite AlCrAs2 is
    ≥ 0.1 eV/atom above it, and its decomposition is zinc-blende-type AlAs + CrAs."""
    from monty.json import MontyDecoder
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    refs, out, _, _ = judged
    sc = out["scores"]
    for cid in ("bcc-Fe", "zb-AlAs", "rs-MgO"):
        assert sc[cid]["e_above_hull"] < 0.01, (cid, sc[cid])
        assert sc[cid]["stable"] is True
    assert sc["wz-AlCrAs2"]["e_above_hull"] >= 0.1 and sc["wz-AlCrAs2"]["stable"] is False
    assert "prototype hull" in sc["wz-AlCrAs2"]["stability_reference"]
    # the phases that beat it, from pymatgen's own decomposition on the same entries
    entries = [MontyDecoder().process_decoded(d) for d in refs["entries"]]
    system = {"Al", "As", "Cr"}
    pd = PhaseDiagram([e for e in entries if {el.symbol for el in e.composition} <= system])
    decomp = pd.get_decomposition(Composition("AlCrAs2"))
    assert {e.composition.reduced_formula for e in decomp} == {"AlAs", "CrAs"}
    assert any("zincblende" in str(e.entry_id) for e in decomp)


def test_offline_novelty_and_funnel_name(judged):
    """MgO and AlAs match their own prototype phases (not novel), bcc Fe is a pure element:
    none survives; the hull is named, and its DFT elemental energies were left out."""
    refs, out, _, _ = judged
    assert out["counts"]["sun"] == 0
    assert "matches reference proto:rocksalt_B1" in out["rejected"]["rs-MgO"][0]
    assert "matches reference proto:zincblende_B3" in out["rejected"]["zb-AlAs"][0]
    assert "pure element" in out["rejected"]["bcc-Fe"][0]
    assert out["sun_label"] == "S.U.N."
    assert out["hull"].startswith("MLIP prototype hull (chgnet:")
    assert "elements only" not in out["hull"]
    assert refs["prototypes"]["counts"]["dft_without_structure_left_out"] > 0


def test_prototype_energies_are_cached(judged):
    """The second reference job on the same store relaxes nothing."""
    refs, _, again, _ = judged
    assert refs["prototypes"]["counts"]["relaxed"] > 100
    assert again["prototypes"]["counts"]["relaxed"] == 0
    assert again["prototypes"]["counts"]["cached"] == refs["prototypes"]["counts"]["relaxed"]
    assert again["entries"] == refs["entries"]


def test_screen_uses_the_offline_hull_and_writes_every_record(judged, tmp_path, capsys):
    """``screen`` with no ``--refs`` takes the campaigns' offline default, names the hull,
    writes every candidate's record (rejects too) and prints the stability numbers; on the
    store the fixture filled it relaxes no prototype phase again."""
    import json

    from smoacs_flows.cli import main
    from smoacs_flows.io import read_jsonl

    *_, home = judged
    inp = tmp_path / "in"
    inp.mkdir()
    for name, s in _four().items():
        s.to(filename=str(inp / f"{name}.cif"))
    out = tmp_path / "out"
    argv = ["screen", str(inp), "--out", str(out), "--policy", "off", "--fmax", "0.05"]
    with with_smoacs_home(home), pytest.MonkeyPatch.context() as mp:
        mp.delenv("MP_API_KEY", raising=False)
        assert main([*argv, "--steps", "300"]) == 0
    text = capsys.readouterr().out
    assert "stability against: MLIP prototype hull (chgnet:" in text
    assert "S.U.N.: 0 of 4" in text and "e_above_hull > 0.1 eV/atom" in text
    funnel = json.loads((out / "funnel.json").read_text())
    assert "'relaxed': 0" in next(n for n in funnel["notes"] if n.startswith("prototype"))
    rows = {r["id"]: r["screening"] for r in read_jsonl(out / "screened.jsonl")}
    assert set(rows) == set(_four())
    wz = rows["wz-AlCrAs2"]
    assert wz["e_above_hull"] >= 0.1 and wz["stable"] is False and not wz["passed"]
    assert "0.1" in funnel["rejected"]["wz-AlCrAs2"][0]
    assert f"{wz['e_above_hull']:.3f}" in funnel["rejected"]["wz-AlCrAs2"][0]
    assert rows["bcc-Fe"]["e_above_hull"] < 0.01 and rows["bcc-Fe"]["novel"] is False
    # space groups before and after relaxation: the textbook ones, and the prototypes kept
    for cid, number in (("bcc-Fe", 229), ("zb-AlAs", 216), ("rs-MgO", 225)):
        assert rows[cid]["spacegroup_initial"]["number"] == number
        assert rows[cid]["spacegroup_relaxed"]["number"] == number
        assert rows[cid]["prototype_kept"] is True
    assert wz["spacegroup_initial"]["number"] == 156  # wurtzite with Al/Cr ordered: P3m1
