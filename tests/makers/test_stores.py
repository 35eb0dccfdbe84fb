"""JobStore factory and the shipped store / launcher templates."""

from __future__ import annotations

import pytest
import yaml

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import SpecError
from smoacs_flows.stores import embedded_job_store, load_job_store
from tests.makers._campaign import ROOT


def test_embedded_store_lives_under_smoacs_home_and_round_trips():
    store = embedded_job_store()
    assert set(store.additional_stores) == {"data"}
    assert store.docs_store.database_path.startswith(str(smoacs_home()))
    store.connect()
    store.docs_store.update({"uuid": "u1", "index": 1, "output": {"x": 1}}, key=["uuid", "index"])
    store.close()
    again = embedded_job_store()  # a new handle sees what the first wrote (on disk)
    again.connect()
    assert again.get_output("u1") == {"x": 1}


def test_template_embedded_yaml_expands_smoacs_home():
    store = load_job_store(ROOT / "stores" / "embedded.yaml")
    assert store.docs_store.database_path == str(smoacs_home() / "jobstore")
    assert store.additional_stores["data"].collection_name == "outputs_blobs"


def test_template_mongodb_yaml_builds_gridfs_data_store(monkeypatch):
    from jobflow.settings import JobflowSettings
    from maggma.stores import GridFSStore, MongoStore

    store = load_job_store(ROOT / "stores" / "mongodb.yaml")  # no connection is made
    spec = yaml.safe_load((ROOT / "stores" / "mongodb.yaml").read_text())
    # every connection field of the file reaches the store it names
    for built, want in (
        (store.docs_store, spec["docs_store"]),
        (store.additional_stores["data"], spec["additional_stores"]["data"]),
    ):
        assert type(built).__name__ == want["type"]
        for field in ("host", "port", "database", "collection_name", "key"):
            assert getattr(built, field) == want[field], field
    # jobflow's own settings loader reads the workers' jobflow.yaml to the same stores
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(ROOT / "stores" / "jobflow.yaml"))
    theirs = JobflowSettings().JOB_STORE
    assert isinstance(theirs.docs_store, MongoStore)
    assert isinstance(theirs.additional_stores["data"], GridFSStore)
    for a, b in (
        (theirs.docs_store, store.docs_store),
        (theirs.additional_stores["data"], store.additional_stores["data"]),
    ):
        assert (a.host, a.port, a.database, a.collection_name) == (
            b.host,
            b.port,
            b.database,
            b.collection_name,
        )


def test_store_without_data_is_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({"docs_store": {"type": "MemoryStore"}}))
    with pytest.raises(SpecError, match="additional_stores.data: missing"):
        load_job_store(bad)
    with pytest.raises(SpecError, match="no such JobStore file"):
        load_job_store(tmp_path / "nope.yaml")
    monkeypatch.setenv("SMOACS_JOB_STORE", str(ROOT / "stores" / "embedded.yaml"))
    assert "data" in load_job_store().additional_stores


def test_launcher_templates_route_by_category():
    from fireworks import FWorker
    from fireworks.utilities.fw_serializers import load_object_from_file

    for cat in ("gpu", "cpu", "vasp"):
        w = FWorker.from_file(str(ROOT / "launchers" / f"my_fworker_{cat}.yaml"))
        assert w.category == cat
        q = load_object_from_file(str(ROOT / "launchers" / f"my_qadapter_{cat}.yaml"))
        assert q.q_type == "SLURM"
        assert f"-w /path/to/fw_config/my_fworker_{cat}.yaml singleshot" in q["rocket_launch"]
        script = q.get_script_str(str(ROOT))
        assert ("--gres=gpu:1" in script) == (cat == "gpu")
    lp = yaml.safe_load((ROOT / "launchers" / "my_launchpad.yaml").read_text())
    assert lp["password"] is None and lp["mongoclient_kwargs"]["serverSelectionTimeoutMS"] > 0
