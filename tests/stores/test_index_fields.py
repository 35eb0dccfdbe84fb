"""The query index follows the queryable fields: an index made before a field existed is
rebuilt (it is a cache of the candidates collection), and the new fields filter."""

from __future__ import annotations

import sqlite3

from smoacs_flows.stores.fields import FIELDS
from smoacs_flows.stores.index import QueryIndex


def test_an_index_without_a_new_field_is_recreated(tmp_path) -> None:
    path = tmp_path / "candidates_index.sqlite"
    old = [c for _, c, _ in FIELDS.values() if c not in ("hull", "spacegroup", "prototype_kept")]
    con = sqlite3.connect(path)
    cols = ", ".join(c for c in old if c != "candidate_id")
    con.execute(
        f"CREATE TABLE candidates (candidate_id TEXT, {cols}, elements TEXT, content_hash TEXT, "
        "row TEXT, structure TEXT, PRIMARY KEY (campaign, version, candidate_id))"
    )
    con.execute("INSERT INTO candidates (candidate_id, campaign, version) VALUES ('x', 'c', 1)")
    con.commit()
    con.close()
    idx = QueryIndex(path)
    have = {r[1] for r in idx.conn.execute("PRAGMA table_info(candidates)")}
    assert {"hull", "spacegroup", "spacegroup_initial", "prototype_kept"} <= have
    # emptied: the results store refills an empty index from its candidates collection
    assert idx.conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 0
    doc = {
        "candidate_id": "a",
        "campaign": "c",
        "version": 1,
        "hull": "MLIP prototype hull (chgnet: 1 phases in 1 systems)",
        "relax": {"spacegroup_relaxed": {"number": 216}, "prototype_kept": True},
        "elements": ["Al", "As"],
        "content_hash": "h",
    }
    idx.replace("c", 1, [doc])
    row = idx.conn.execute("SELECT spacegroup, prototype_kept, hull FROM candidates").fetchone()
    assert row == (216, 1, doc["hull"])
    idx.close()


def test_report_names_the_hull_and_the_space_groups(tmp_path) -> None:
    """The report's final table shows each candidate's space group before and after
    relaxation (and whether the proposed crystal changed); the hull is named under the
    funnel, and an elements-only hull is never called S.U.N."""
    from smoacs_flows.stores.report import write_report

    hull = "elements only (shipped MP elemental references, offline)"
    docs = [
        {
            "candidate_id": f"c{i}",
            "campaign": "c",
            "version": 1,
            "stage": "sun",
            "state": "done",
            "hull": hull,
            "e_above_hull": 0.0,
            "sun": {"stable": True, "unique": True, "novel": True, "sun": False, "passed": True},
            "relax": {
                "spacegroup_initial": {"number": 225, "symbol": "Fm-3m"},
                "spacegroup_relaxed": {"number": 216 if i else 225, "symbol": sym},
                "prototype_kept": not i,
            },
        }
        for i, sym in enumerate(["Fm-3m", "F-43m"])
    ]
    out = write_report(docs, tmp_path / "r.html", title="t")
    html = out.read_text()
    assert "Fm-3m → F-43m (changed)" in html and "Fm-3m → Fm-3m<" in html
    assert f"E<sub>hull</sub> against: {hull}" in html
    assert "U.N., below the elements (no compound hull)" in html
    assert ">S.U.N.<" not in html
