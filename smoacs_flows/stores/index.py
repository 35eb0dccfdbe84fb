"""The SQLite query index of an embedded (montydb) candidates store.

montydb has no indexes and filters every document in Python (about 1.5 s per query at 50,000
candidates), so queries on the embedded store run here: one row per candidate with every
queryable field as an indexed column, its summary row and its final structure.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoacs_flows.stores.fields import FIELDS, SQL_OPS, get_path, sql_value, summary_row

if TYPE_CHECKING:
    from smoacs_flows.stores.query import Filter


class QueryIndex:
    """The SQLite query index of an embedded candidates store (one row per candidate)."""

    COLUMNS = [c for _, c, _ in FIELDS.values()]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60)
        cols = ", ".join(
            f"{c} {'TEXT' if c in ('candidate_id',) else ''}"
            for c in self.COLUMNS
            if c != "candidate_id"
        )
        # one row per (campaign, version, candidate): versions of a campaign share ids
        table = (
            f"CREATE TABLE IF NOT EXISTS candidates (candidate_id TEXT, {cols}, "
            "elements TEXT, content_hash TEXT, row TEXT, structure TEXT, "
            "PRIMARY KEY (campaign, version, candidate_id))"
        )
        found = self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name='candidates'"
        ).fetchone()
        if found:
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(candidates)")}
            if not set(self.COLUMNS) <= have and "candidate_id TEXT PRIMARY KEY" not in found[0]:
                # a field was added since: the index is a cache of the candidates collection,
                # dropped here and rebuilt from it (ResultsStore._open_index)
                with self.conn:
                    self.conn.execute("DROP TABLE candidates")
                found = None
        if found and "candidate_id TEXT PRIMARY KEY" in found[0]:  # an index from before
            with self.conn:
                self.conn.execute("ALTER TABLE candidates RENAME TO candidates_old")
                self.conn.execute(table)
                self.conn.execute("INSERT INTO candidates SELECT * FROM candidates_old")
                self.conn.execute("DROP TABLE candidates_old")
        self.conn.execute(table)
        for c in (
            "campaign, version",
            "state",
            "verdict",
            "e_above_hull",
            "nelements",
            "polarisation",
            "moment_per_fu",
        ):
            name = "ix_" + re.sub(r"\W+", "_", c)
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON candidates ({c})")
        self.conn.commit()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def hashes(self, campaign: str, version: int) -> dict[str, str]:
        """``{candidate_id: content_hash}`` of one campaign version."""
        cur = self.conn.execute(
            "SELECT candidate_id, content_hash FROM candidates WHERE campaign=? AND version=?",
            (campaign, version),
        )
        return dict(cur.fetchall())

    def replace(self, campaign: str, version: int, docs: list[dict[str, Any]]) -> None:
        """Replace the rows of one campaign version, in one transaction."""
        rows = []
        for d in docs:
            r = summary_row(d)
            vals = [sql_value(get_path(d, path)) for path, _, _ in FIELDS.values()]
            rows.append(
                (
                    *vals,
                    "," + ",".join(d.get("elements") or []) + ",",
                    d["content_hash"],
                    json.dumps(r),
                    json.dumps(d.get("final_structure")),
                )
            )
        marks = ", ".join("?" * (len(self.COLUMNS) + 4))
        with self.conn:
            self.conn.execute(
                "DELETE FROM candidates WHERE campaign=? AND version=?", (campaign, version)
            )
            self.conn.executemany(
                f"INSERT INTO candidates ({', '.join(self.COLUMNS)}, elements, content_hash, "
                f"row, structure) VALUES ({marks})",
                rows,
            )

    def campaigns(self) -> dict[str, int]:
        """``{campaign: latest version}``."""
        cur = self.conn.execute("SELECT campaign, MAX(version) FROM candidates GROUP BY campaign")
        return dict(cur.fetchall())

    def select(
        self,
        flt: Filter,
        sort: str | None,
        descending: bool,
        limit: int | None,
        versions: dict[str, int],
    ) -> list[tuple[dict[str, Any], str]]:
        """(summary row, structure JSON) of the matching candidates."""
        where, args = [], []
        if versions:
            where.append("(" + " OR ".join("(campaign=? AND version=?)" for _ in versions) + ")")
            for c, v in versions.items():
                args += [c, v]
        for name, op, value in flt.terms:
            col = FIELDS[name][1]
            if op == "$in":
                where.append(f"{col} IN ({', '.join('?' * len(value))})")
                args += [sql_value(v) for v in value]
            elif value is None:
                where.append(f"{col} IS {'NOT ' if op == '$ne' else ''}NULL")
            else:
                where.append(f"{col} {SQL_OPS[op]} ?")
                args.append(sql_value(value))
        for el in flt.include:
            where.append("elements LIKE ?")
            args.append(f"%,{el},%")
        for el in flt.exclude:
            where.append("elements NOT LIKE ?")
            args.append(f"%,{el},%")
        sql = "SELECT row, structure FROM candidates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if sort:
            col = FIELDS[sort][1]
            sql += f" ORDER BY {col} IS NULL, {col} {'DESC' if descending else 'ASC'}, candidate_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [(json.loads(r), s) for r, s in self.conn.execute(sql, args)]
