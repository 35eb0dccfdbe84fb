"""A JOB_STORE the workers cannot share (MemoryStore, JSONStore, in-memory montydb) is refused
at ``config`` (non-zero exit) and ``submit`` (one error line, nothing added), as jobflow itself
would otherwise fizzle the second job with "Could not resolve reference"."""

from __future__ import annotations

import yaml

from smoacs_flows.cli import main
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad

from ._campaign import tiny_campaign, write_campaign


def _jobflow_yaml(tmp_path, kind: str) -> str:
    if kind == "JSONStore":
        (tmp_path / "out.json").write_text("[]")
        (tmp_path / "blobs.json").write_text("[]")
        docs = {"type": "JSONStore", "paths": str(tmp_path / "out.json"), "read_only": False}
        data = {"type": "JSONStore", "paths": str(tmp_path / "blobs.json"), "read_only": False}
    elif kind == "MemoryStore":
        docs = {"type": "MemoryStore", "collection_name": "outputs"}
        data = {"type": "MemoryStore", "collection_name": "blobs"}
    else:  # montydb in memory
        docs = {"type": "MontyStore", "collection_name": "outputs", "storage": "memory"}
        data = {"type": "MontyStore", "collection_name": "blobs", "storage": "memory"}
    path = tmp_path / "jobflow.yaml"
    spec = {"JOB_STORE": {"docs_store": docs, "additional_stores": {"data": data}}}
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_unshared_stores_are_refused(tmp_path, monkeypatch, capsys) -> None:
    camp = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="shared"))
    for kind in ("JSONStore", "MemoryStore", "MontyStore"):
        monkeypatch.setenv("JOBFLOW_CONFIG_FILE", _jobflow_yaml(tmp_path, kind))
        assert main(["config"]) == 2
        out, err = capsys.readouterr()
        assert "one process's memory" in out and "job_store" in err, (kind, out, err)
        assert main(["submit", str(camp)]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "one process's memory" in lines[0], (kind, err)
    with EmbeddedLaunchPad().session(write=False) as lp:  # nothing was submitted
        assert lp.get_fw_ids() == []


def test_a_shared_store_still_passes(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "jobflow.yaml"
    common = {"type": "MontyStore", "database_path": str(tmp_path / "db")}
    spec = {
        "JOB_STORE": {
            "docs_store": {**common, "collection_name": "outputs"},
            "additional_stores": {"data": {**common, "collection_name": "blobs"}},
        }
    }
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(path))
    assert main(["config"]) == 0


def test_launchers_init_refuses_an_unshared_store(tmp_path, capsys) -> None:
    """The JOB_STORE written into a cluster folder's jobflow.yaml is refused the same way."""
    import yaml

    from smoacs_flows.cli import main

    bad = tmp_path / "mem.yaml"
    mem = {"type": "MemoryStore", "collection_name": "x"}
    bad.write_text(yaml.safe_dump({"docs_store": mem, "additional_stores": {"data": mem}}))
    assert main(["launchers", "init", str(tmp_path / "fw"), "--store", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "MemoryStore" in err[0], err
    assert not (tmp_path / "fw").exists()
