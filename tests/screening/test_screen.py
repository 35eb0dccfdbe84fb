"""The prefilter and the `smoacs-flows screen` funnel end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from smoacs_flows.cli import main
from smoacs_flows.io import read_jsonl
from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one
from smoacs_flows.screening.references import read_entries_file
from smoacs_flows.screening.stability import mlip_entry

from ._data import MP_ELEMENTS, perov_rows


def _cubic(species, a=3.9):
    coords = [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
    return Structure(Lattice.cubic(a), species, coords[: len(species)])


def test_prefilter_criteria():
    cfg = PrefilterConfig(band_gap_max=0.5, neutrality_policy="ionic")
    sto = _cubic(["Sr", "Ti", "O", "O", "O"])
    assert prefilter_one({"predicted": {"alignn.band_gap": 0.1}}, sto, cfg) == []
    assert "band gap" in prefilter_one({"predicted": {"alignn.band_gap": 1.2}}, sto, cfg)[0]
    assert "no predicted band gap" in prefilter_one({}, sto, cfg)[0]
    cfg = PrefilterConfig(neutrality_policy="ionic")
    nimnsb = Structure(
        Lattice.cubic(5.9), ["Ni", "Mn", "Sb"], [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5]]
    )
    assert "charge-neutral" in prefilter_one({}, nimnsb, cfg)[0]
    assert prefilter_one({}, nimnsb, PrefilterConfig(neutrality_policy="ionic+metallic")) == []
    six = Structure(
        Lattice.cubic(8),
        ["Na", "K", "Rb", "Cs", "Cl", "Br"],
        np.random.default_rng(0).random((6, 3)) * 0.9,
    )
    assert any(
        "6 elements > 5" in r
        for r in prefilter_one({}, six, PrefilterConfig(neutrality_policy=None, min_distance=None))
    )
    close = _cubic(["Sr", "Ti", "O", "O", "O"])
    close.replace(2, "O", [0.02, 0, 0])
    assert "minimum interatomic distance" in prefilter_one({}, close, PrefilterConfig())[0]
    nan = Structure(Lattice([[math.nan, 0, 0], [0, 4, 0], [0, 0, 4]]), ["Na"], [[0, 0, 0]])
    assert prefilter_one({}, nan, PrefilterConfig()) == ["lattice has NaN/inf entries"]


def _perov_records(n=12):
    """Records in the propose format with energies from the real perov_5 formation heats."""
    elements = {e.composition.elements[0].symbol: e for e in read_entries_file(MP_ELEMENTS)}
    recs, structs = [], []
    for i, r in enumerate(perov_rows("val", n, start=100)):
        s = Structure.from_str(r["cif"], fmt="cif")
        e = sum(k * elements[el.symbol].energy_per_atom for el, k in s.composition.items())
        e_pa = e / len(s) + float(r["heat_ref"])
        recs.append(
            {
                "id": f"t-0-{i}",
                "campaign": "t",
                "structure": s.as_dict(),
                "screening": {"mlip_energy_per_atom": e_pa},
            }
        )
        structs.append((s, e_pa))
    return recs, structs, elements


def _screen(inp, out, refs, e_hull_max) -> int:
    """``smoacs-flows screen`` without relaxation or neutrality policy; its exit code."""
    argv = ["screen", str(inp), "--out", str(out), "--mlip", "none", "--policy", "off"]
    return main([*argv, "--refs", str(refs), "--e-hull-max", str(e_hull_max)])


def test_screen_cli_funnel_without_relaxation(tmp_path, smoacs_home, capsys):
    recs, structs, elements = _perov_records()
    # a perturbed copy of t-0-2 (0.26 eV/atom above the elemental hull: it passes stability)
    dup = structs[2][0].copy()
    dup.perturb(0.02, seed=0)
    recs.append(
        {
            "id": "t-0-dup",
            "structure": dup.as_dict(),
            "screening": {"mlip_energy_per_atom": structs[2][1]},
        }
    )
    bad = _cubic(["Sr", "Ti", "O", "O", "O"])
    bad_d = bad.as_dict()
    bad_d["lattice"]["matrix"][0][0] = float("nan")
    recs.append({"id": "t-0-nan", "structure": bad_d})
    inp = tmp_path / "proposals.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "screened"
    assert _screen(inp, out, MP_ELEMENTS, 0.3) == 0
    printed = capsys.readouterr().out
    assert "prefilter" in printed and "novelty" in printed
    funnel = json.loads((out / "funnel.json").read_text())
    st = {s["stage"]: s for s in funnel["stages"]}
    assert [s["stage"] for s in funnel["stages"]] == [
        "prefilter",
        "relaxation",
        "stability",
        "uniqueness",
        "novelty",
    ]
    for a, b in zip(funnel["stages"], funnel["stages"][1:]):
        assert b["in"] == a["out"]
    assert st["prefilter"]["out"] == len(recs) - 1 and "t-0-nan" in funnel["rejected"]
    assert not st["relaxation"]["evaluated"] and not st["novelty"]["evaluated"]
    survivors = read_jsonl(out / "survivors.jsonl")
    assert len(survivors) == funnel["n_survivors"] == st["novelty"]["out"]
    assert sorted(p.stem for p in (out / "cif").iterdir()) == sorted(r["id"] for r in survivors)
    # e_above_hull equals pymatgen's PhaseDiagram on the same (elemental) references, and the
    # survivors are exactly the records within 0.3 eV/atom of that hull, less the duplicate
    pd = PhaseDiagram(list(elements.values()))
    ref = {
        r["id"]: pd.get_e_above_hull(mlip_entry(s, e, "none", r["id"]), allow_negative=True)
        for r, (s, e) in zip(recs, structs)
    }
    assert {r["id"] for r in survivors} == {k for k, v in ref.items() if v <= 0.3}
    assert "t-0-2" in ref and ref["t-0-2"] <= 0.3  # the original of the duplicate survives
    for r in survivors:
        assert r["screening"]["e_above_hull"] == pytest.approx(ref[r["id"]], abs=1e-9)
        assert r["screening"]["stable"] and r["screening"]["unique"]
    above = {k: v for k, v in ref.items() if v > 0.3}
    assert above  # the cut is exercised: some records lie above it
    for k, v in above.items():
        assert funnel["rejected"][k] == [f"e_above_hull {v:.3f} eV/atom > 0.3"]
    assert funnel["rejected"]["t-0-dup"] == ["duplicate of t-0-2"]


def test_screen_novelty_against_reference_structures(tmp_path, smoacs_home):
    recs, structs, elements = _perov_records(6)
    refs = [e.as_dict() for e in elements.values()]
    s_ref, e_ref = structs[2]
    known = s_ref.copy()
    known.translate_sites(list(range(len(known))), [0.1, 0.2, 0.3])
    refs.append(
        ComputedStructureEntry(
            known, e_ref * len(known) + 5.0, entry_id="mp-known", parameters={"run_type": "GGA"}
        ).as_dict()
    )
    rf = tmp_path / "refs.json"
    rf.write_text(json.dumps(refs))
    inp = tmp_path / "p.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "o"
    assert _screen(inp, out, rf, 10) == 0
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["stages"][-1]["evaluated"]
    assert funnel["rejected"]["t-0-2"] == ["matches reference mp-known"]
    assert funnel["n_survivors"] == len(recs) - 1


def test_screen_cif_folder_with_chgnet(tmp_path, smoacs_home):
    folder = tmp_path / "cifs"
    folder.mkdir()
    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()
    nacl.to(filename=str(folder / "a.cif"))
    shifted = nacl.copy()
    shifted.translate_sites([0, 1], [0.25, 0.25, 0.25])
    shifted.to(filename=str(folder / "b.cif"))
    Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]).to(
        filename=str(folder / "c.cif")
    )
    out = tmp_path / "o"
    assert (
        main(
            [
                "screen",
                str(folder),
                "--out",
                str(out),
                "--mlip",
                "chgnet",
                "--fmax",
                "0.05",
                "--steps",
                "100",
                "--refs",
                "none",
            ]
        )
        == 0
    )
    funnel = json.loads((out / "funnel.json").read_text())
    st = {s["stage"]: s for s in funnel["stages"]}
    assert st["relaxation"]["evaluated"] and st["relaxation"]["out"] == 2
    assert not st["stability"]["evaluated"] and not st["novelty"]["evaluated"]
    assert funnel["rejected"]["b"] == ["duplicate of a"]
    assert "minimum interatomic distance" in funnel["rejected"]["c"][0]
    (surv,) = read_jsonl(out / "survivors.jsonl")
    assert surv["id"] == "a" and surv["screening"]["mlip"] == "chgnet"
    relaxed = Structure.from_dict(surv["screening"]["relaxed"])
    assert relaxed.volume != pytest.approx(nacl.volume)
    assert Structure.from_file(out / "cif" / "a.cif").volume == pytest.approx(
        relaxed.volume, rel=1e-4
    )


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    inp = tmp_path / "p.jsonl"
    s = _cubic(["Sr", "Ti", "O", "O", "O"])
    inp.write_text(
        json.dumps({"id": "x", "structure": s.as_dict()}) + "\n" + json.dumps({"id": "y"}) + "\n"
    )
    out = tmp_path / "o"
    assert main(["screen", str(inp), "--out", str(out), "--mlip", "none"]) == 2
    assert "p.jsonl:2: record has no 'structure' field" in capsys.readouterr().err
    assert not out.exists()
    inp.write_text(json.dumps({"id": "x", "structure": {"lattice": "oops"}}) + "\n")
    assert main(["screen", str(inp), "--out", str(out), "--mlip", "none"]) == 2
    assert "p.jsonl:1: field 'structure'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["screen", str(empty), "--out", str(out), "--mlip", "none"]) == 2
    assert "no .cif files" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / "keep").write_text("x")
    inp.write_text(json.dumps({"id": "x", "structure": s.as_dict()}) + "\n")
    assert main(["screen", str(inp), "--out", str(out), "--mlip", "none"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep"]
