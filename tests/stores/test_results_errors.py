"""Results-store configuration errors: one line naming the file / host, exit 2, nothing made."""

from __future__ import annotations

import pytest
import yaml

from smoacs_flows.cli import main
from smoacs_flows.errors import SpecError
from smoacs_flows.stores.results import load_results_store


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_unreachable_mongodb_results_store(tmp_path, capsys):
    spec = {
        k: {
            "type": "MongoStore",
            "database": "smoacs",
            "collection_name": k,
            "host": "127.0.0.1",
            "port": 1,
            "key": "key",
            "mongoclient_kwargs": {"serverSelectionTimeoutMS": 500},
        }
        for k in ("candidates", "sources")
    }
    path = _write(tmp_path / "results.yaml", spec)
    assert main(["query", "--results", str(path), "--no-update"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the results store")
    assert str(path) in err and "127.0.0.1:1" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.yaml"]


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        ({"candidates": {"type": "MongoStore"}}, "sources: missing"),
        (
            {"candidates": {"type": "NoSuchStore"}, "sources": {"type": "MemoryStore"}},
            "candidates.type: 'NoSuchStore' is not a maggma store",
        ),
        (["not", "a", "mapping"], "expected a mapping"),
    ],
)
def test_bad_results_store_file(tmp_path, data, msg):
    path = _write(tmp_path / "results.yaml", data)
    with pytest.raises(SpecError, match=msg):
        load_results_store(path)


def test_missing_results_store_file(tmp_path):
    with pytest.raises(SpecError, match="no such results-store file"):
        load_results_store(tmp_path / "nope.yaml")


def test_query_on_an_empty_store_names_the_campaign(capsys):
    assert main(["query", "--campaign", "ghost", "--no-update"]) == 2
    assert "unknown campaign 'ghost' in the results store (known: none)" in (
        capsys.readouterr().err
    )
