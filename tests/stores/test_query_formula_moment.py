"""``query`` matches formulas by reduced formula and filters on CHGNet's Σ|m_i|; an index
made before the ``chgnet_moment`` column existed is rebuilt from the candidates collection."""

from __future__ import annotations

import sqlite3

import pytest
from maggma.stores import MemoryStore
from pymatgen.core import Composition

from smoacs_flows.stores.candidates import extract_sections
from smoacs_flows.stores.fields import FIELDS, QueryError
from smoacs_flows.stores.query import query
from smoacs_flows.stores.results import ResultsStore, embedded_results_store


def _doc(cid: str, campaign: str, comp: Composition, screening: dict, fu: int = 1) -> dict:
    """A candidate document whose relax section comes from a relax job's record."""
    rec = {"id": cid, "formula_units": fu, "screening": {"mlip": "chgnet", **screening}}
    relax = extract_sections("relax", {"records": [rec]}, "uuid-1")[cid]["relax"]
    return {
        "candidate_id": cid,
        "campaign": campaign,
        "version": 1,
        "reduced_formula": comp.reduced_formula,
        "elements": sorted(str(e) for e in comp.elements),
        "relax": relax,
        "content_hash": cid,
    }


def _relaxed(cid: str, formula: str, site_moments: list[float], fu: int) -> dict:
    """A relaxed candidate with CHGNet site moments."""
    return _doc(cid, "c", Composition(formula), {"mlip_site_magmoms": site_moments}, fu)


DOCS = [
    _relaxed("fe2as", "Fe4As2", [2.1, 2.1, 1.3, 1.3, 0.1, 0.1], fu=2),  # Σ|m|/fu = 3.5
    _relaxed("feas", "FeAs", [0.2, -0.2, 0.0, 0.0], fu=2),  # antiparallel: Σ|m|/fu = 0.2
    _relaxed("nimnsb", "NiMnSb", [0.3, 3.7, -0.1], fu=1),  # Σ|m|/fu = 4.1
]


def _stores(tmp_path, docs: list[dict] | None = None, campaign: str = "c") -> list[ResultsStore]:
    """The embedded store (SQLite index) and a Mongo-like one (filters pushed to the store),
    each holding ``docs`` (default DOCS) of ``campaign``."""
    docs = DOCS if docs is None else docs
    emb = embedded_results_store(tmp_path / "results").connect()
    mem = ResultsStore(
        MemoryStore("candidates", key="candidate_id"),
        MemoryStore("sources", key="key"),
        MemoryStore("sections", key="key"),
    ).connect()
    for rs in (emb, mem):
        rs.candidates.update([dict(d) for d in docs], key="candidate_id")
        if rs.index is not None:
            rs.index.replace(campaign, 1, docs)
    return [emb, mem]


def test_the_relax_section_carries_the_chgnet_moment():
    relax = DOCS[1]["relax"]
    assert relax["chgnet_moment"] == pytest.approx(0.4)  # Σ|m_i| per cell, signs dropped
    assert relax["chgnet_moment_per_fu"] == pytest.approx(0.2)


@pytest.mark.parametrize("which", [0, 1])
def test_formula_by_reduced_formula_and_chgnet_moment(tmp_path, which):
    rs = _stores(tmp_path)[which]
    ids = lambda found: sorted(c.candidate_id for c in found)  # noqa: E731
    assert Composition("Fe4As2").reduced_formula == "Fe2As"
    assert ids(query(campaign="c", formula="Fe4As2", results=rs)) == ["fe2as"]
    assert ids(query(campaign="c", formula="AsFe2", results=rs)) == ["fe2as"]
    assert ids(query(campaign="c", where=["formula=Fe2As2|SbMnNi"], results=rs)) == [
        "feas",
        "nimnsb",
    ]
    assert ids(query(campaign="c", chgnet_moment_min=3.0, results=rs)) == ["fe2as", "nimnsb"]
    assert ids(query(campaign="c", chgnet_moment_max=1.0, results=rs)) == ["feas"]
    assert ids(query(campaign="c", where=["chgnet_moment>4"], results=rs)) == ["nimnsb"]
    found = query(campaign="c", sort="chgnet_moment", descending=True, results=rs)
    assert [c.summary["chgnet_moment"] for c in found] == pytest.approx([4.1, 3.5, 0.2])
    with pytest.raises(QueryError, match="formula"):
        query(campaign="c", formula="Xx9", results=rs)


def test_an_index_without_the_chgnet_column_is_rebuilt_from_the_collection(tmp_path):
    rs = _stores(tmp_path)[0]
    rs.close()
    path = tmp_path / "results" / "candidates_index.sqlite"
    old = [c for _, c, _ in FIELDS.values() if c not in ("chgnet_moment", "candidate_id")]
    con = sqlite3.connect(path)
    con.execute("DROP TABLE candidates")
    con.execute(
        f"CREATE TABLE candidates (candidate_id TEXT, {', '.join(old)}, elements TEXT, "
        "content_hash TEXT, row TEXT, structure TEXT, "
        "PRIMARY KEY (campaign, version, candidate_id))"
    )
    con.commit()
    con.close()
    rs = embedded_results_store(tmp_path / "results").connect()
    found = query(campaign="c", chgnet_moment_min=3.0, results=rs)
    assert sorted(c.candidate_id for c in found) == ["fe2as", "nimnsb"]


def _with_spacegroup(cid: str, structure) -> dict:
    """A relaxed candidate whose space group is computed from ``structure``."""
    from smoacs_flows.screening.symmetry import spacegroup

    return _doc(cid, "s", structure.composition, {"spacegroup_relaxed": spacegroup(structure)})


@pytest.mark.parametrize("which", [0, 1])
def test_spacegroup_by_number_or_symbol(tmp_path, which):
    """Rock salt, zinc blende and wurtzite built by pymatgen from their space groups; the
    expected numbers are pymatgen's SpacegroupAnalyzer's, the symbols the textbook ones."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structures = {
        "nacl": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "gaas": Structure.from_spacegroup(
            "F-43m", Lattice.cubic(5.65), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]]
        ),
        "zno": Structure.from_spacegroup(
            "P6_3mc",
            Lattice.hexagonal(3.25, 5.21),
            ["Zn", "O"],
            [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]],
        ),
    }
    numbers = {k: SpacegroupAnalyzer(s).get_space_group_number() for k, s in structures.items()}
    assert numbers == {"nacl": 225, "gaas": 216, "zno": 186}
    docs = [_with_spacegroup(k, s) for k, s in structures.items()]
    rs = _stores(tmp_path, docs, "s")[which]
    ids = lambda sg: sorted(c.candidate_id for c in query(campaign="s", spacegroup=sg, results=rs))  # noqa: E731
    assert ids("Fm-3m") == ids(225) == ids("225") == ["nacl"]
    assert ids("F-43m") == ["gaas"]
    assert ids("P6_3mc") == ids(186) == ["zno"]
    assert ids("Pm-3m") == []
    for bad in ("Xx-9", "0", "231"):
        with pytest.raises(QueryError, match="--spacegroup"):
            query(campaign="s", spacegroup=bad, results=rs)


def test_cli_refuses_a_bad_spacegroup_before_opening_anything(tmp_path, monkeypatch, capsys):
    from smoacs_flows.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("SMOACS_HOME", str(home))
    assert main(["query", "--campaign", "c", "--spacegroup", "Q99"]) == 2
    err = capsys.readouterr().err
    assert "--spacegroup: 'Q99'" in err and "Traceback" not in err
    assert not home.exists()  # nothing created
