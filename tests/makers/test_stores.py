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


def test_template_mongodb_yaml_builds_gridfs_data_store():
    from maggma.stores import GridFSStore, MongoStore

    store = load_job_store(ROOT / "stores" / "mongodb.yaml")  # no connection is made
    assert isinstance(store.docs_store, MongoStore)
    assert isinstance(store.additional_stores["data"], GridFSStore)
    spec = yaml.safe_load((ROOT / "stores" / "jobflow.yaml").read_text())
    assert set(spec["JOB_STORE"]["additional_stores"]) == {"data"}


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
