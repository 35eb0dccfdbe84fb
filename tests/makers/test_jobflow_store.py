"""With ``JOBFLOW_CONFIG_FILE`` naming a ``JOB_STORE`` (a MontyStore in a temporary folder),
``run``, ``submit``, ``query``, ``status`` and ``report`` use it, say so, and the embedded
default store stays empty. The reference for "it" is jobflow's own settings loader."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from smoacs_flows.cli import main
from smoacs_flows.stores import embedded_job_store
from tests.makers._campaign import CHEAP_STAGES, tiny_campaign, write_campaign


@pytest.mark.slow
def test_run_and_results_use_jobflow_job_store(tmp_path, monkeypatch, capsys):
    from jobflow.settings import JobflowSettings

    db = tmp_path / "jf-db"
    common = {"type": "MontyStore", "database_path": str(db), "database_name": "jf"}
    cfg = tmp_path / "jobflow.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "JOB_STORE": {
                    "docs_store": {**common, "collection_name": "outputs", "key": "uuid"},
                    "additional_stores": {
                        "data": {**common, "collection_name": "blobs", "key": "blob_uuid"}
                    },
                }
            }
        )
    )
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(cfg))
    stages = copy.deepcopy(CHEAP_STAGES)
    stages["dft"]["max_candidates"] = 0  # the store is under test, not DFT
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="jf", stages=stages))
    line = f"montydb {db} (JOB_STORE of JOBFLOW_CONFIG_FILE={cfg})"

    assert main(["run", str(path), "--poll", "1"]) == 0
    out, err = capsys.readouterr()
    assert "campaign jf v1: done" in out and "results store: 2 candidate documents" in out
    assert line in err and "not written into the fireworks" in err

    # what the workers wrote is in jobflow's store, read back through jobflow itself
    store = JobflowSettings().JOB_STORE
    store.connect()
    assert store.docs_store.database_path == str(db)
    stage_names = {d["metadata"]["stage"] for d in store.query({"metadata.tags": "smoacs:jf:v1"})}
    assert {"propose", "prefilter", "relax", "sun", "summary"} <= stage_names
    emb = embedded_job_store()
    emb.connect()
    assert emb.docs_store.count() == 0 and emb.additional_stores["data"].count() == 0

    assert main(["status", "jf", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["funnel"]["proposed"] == 2 and line in err
    assert main(["query", "--campaign", "jf", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 2 and line in err
    assert main(["report", "jf", "--out", str(tmp_path / "r.html")]) == 0
    assert line in capsys.readouterr().err and (tmp_path / "r.html").is_file()

    # submit: no store written into the fireworks (the workers' JOB_STORE is this one)
    assert main(["submit", str(path), "--new-version", "--json"]) == 0
    out, err = capsys.readouterr()
    assert line in err and json.loads(out)["version"] == 2
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad

    lp = EmbeddedLaunchPad()
    with lp.session(write=False):
        fw = lp.fireworks.find_one({"spec.tags": "smoacs:jf:v2"})
    assert fw["spec"]["_tasks"][0].get("store") is None

    assert main(["config", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["job_store"]["origin"] == "jobflow" and rep["job_store"]["where"] == f"montydb {db}"
    assert emb.docs_store.count() == 0
