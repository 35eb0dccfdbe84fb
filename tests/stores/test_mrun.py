"""Two concurrent ``submit --new-version`` of one campaign on the embedded LaunchPad get two
versions and both complete; maggma's own ``mrun`` then builds the candidates collection from
a JSON builder file, into stores given the way ``stores/results.yaml`` gives them, and gets
what the project's own build gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from maggma.stores import MongoStore, MontyStore
from monty.serialization import dumpfn, loadfn

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.makers.run import run_workers
from smoacs_flows.stores import embedded_job_store
from smoacs_flows.stores.builder import CandidatesBuilder
from smoacs_flows.stores.results import (
    ResultsStore,
    embedded_results_store,
    load_results_store,
    update_results,
)
from tests._env import with_smoacs_home
from tests.makers._campaign import CHEAP_STAGES, ROOT, tiny_campaign, write_campaign

SUBMIT = "import sys; from smoacs_flows.cli import main; sys.exit(main(sys.argv[1:]))"


def _env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ("SMOACS_HOME", "PATH", "HOME") if k in os.environ}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Submit one campaign twice at once (two processes), run both versions to the end."""
    home = tmp_path_factory.mktemp("mrun_home")
    with with_smoacs_home(home):
        tmp = tmp_path_factory.mktemp("mrun")
        # one campaign, two files: DFT of one candidate in one, none in the other (test time)
        no_dft = {**CHEAP_STAGES, "dft": {**CHEAP_STAGES["dft"], "max_candidates": 0}}
        paths = [
            write_campaign(tmp / f"c{i}.yaml", tiny_campaign(name="conc", n=2, batch=2, stages=st))
            for i, st in enumerate((CHEAP_STAGES, no_dft))
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SUBMIT, "submit", str(path), "--new-version", "--json"],
                cwd=ROOT,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in paths
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err
        subs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
        lp = EmbeddedLaunchPad()
        state, logs = run_workers(
            lp, "smoacs:conc", ["gpu", "cpu"], tmp / "run", poll=1, timeout=900, echo=lambda s: None
        )
        with lp.session(write=False):
            fws = list(
                lp.fireworks.find(
                    {"spec.tags": "smoacs:conc"}, {"spec.tags": 1, "state": 1, "fw_id": 1}
                )
            )
        yield {"subs": subs, "state": state, "fws": fws, "lp": lp, "tmp": tmp, "logs": logs}


@pytest.fixture
def conc(two_versions, monkeypatch):
    monkeypatch.setenv("SMOACS_HOME", str(two_versions["lp"].path.parent.parent))
    return two_versions


@pytest.mark.slow
def test_concurrent_new_versions_both_complete(conc):
    subs = conc["subs"]
    assert sorted(s["version"] for s in subs) == [1, 2]
    assert sorted(s["tag"] for s in subs) == ["smoacs:conc:v1", "smoacs:conc:v2"]
    assert conc["state"] == "done", [p.read_text()[-2000:] for p in conc["logs"]]
    for s in subs:
        mine = [fw for fw in conc["fws"] if s["tag"] in fw["spec"]["tags"]]
        # each version's fireworks (its dynamic DFT ones included) all completed
        assert set(s["fw_ids"]) <= {fw["fw_id"] for fw in mine}
        assert {fw["state"] for fw in mine} == {"COMPLETED"}
    # no firework belongs to both versions
    both = [
        fw for fw in conc["fws"] if {"smoacs:conc:v1", "smoacs:conc:v2"} <= set(fw["spec"]["tags"])
    ]
    assert both == []


def _docs(store) -> dict[str, dict]:
    store.connect()
    try:
        out = {}
        for d in store.query({}):
            d.pop("_id", None)
            d.pop("last_updated", None)
            out[(d["candidate_id"], d["version"])] = d
        return out
    finally:
        store.close()


def _results_yaml(folder: Path) -> Path:
    """A results-store file in stores/results.yaml's layout, on montydb instead of MongoDB."""
    spec = {
        name: {
            "type": "MontyStore",
            "database_path": str(folder),
            "database_name": "mrun_results",
            "collection_name": coll,
            "key": key,
        }
        for name, coll, key in (
            ("candidates", "candidates", "candidate_id"),
            ("sources", "candidate_sources", "key"),
            ("sections", "candidate_sections", "key"),
        )
    }
    path = folder / "results.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_mrun_builds_what_the_project_builds(conc):
    lp, tmp = conc["lp"], conc["tmp"]
    # the project's own build (embedded results store with its SQLite index)
    own = embedded_results_store()
    update_results(own, embedded_job_store(), lp)
    own.close()
    expected = _docs(own.candidates)
    assert {(d["campaign"], d["version"]) for d in expected.values()} == {
        ("conc", 1),
        ("conc", 2),
    }
    # versions share candidate ids: each has its own documents; one version ran DFT
    assert len(expected) == 4 and len({k[0] for k in expected}) == 2
    assert sum(1 for d in expected.values() if d.get("dft")) == 1

    results = load_results_store(_results_yaml(tmp / "mrun_results"))
    builder = results.builder(embedded_job_store(), lp)
    dumpfn(builder, tmp / "builder.json")
    text = (tmp / "builder.json").read_text()
    assert '"@class": "CandidatesBuilder"' in text and str(lp.path) in text
    # the file round-trips to an equal builder
    again = loadfn(tmp / "builder.json")
    assert isinstance(again, CandidatesBuilder) and isinstance(again.results, ResultsStore)
    assert again.as_dict() == builder.as_dict()

    mrun = Path(sys.executable).parent / "mrun"
    for procs in ("2", "1"):  # maggma's worker processes, then serial: nothing new
        r = subprocess.run(
            [str(mrun), "--no_bars", "-n", procs, str(tmp / "builder.json")],
            cwd=tmp,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        if procs == "2":
            first = _stamps(results)
    got = _docs(results.candidates)
    assert got == expected
    assert _stamps(results) == first


def _stamps(results: ResultsStore) -> dict[tuple, str]:
    results.candidates.connect()
    try:
        props = ["candidate_id", "version", "last_updated"]
        docs = results.candidates.query({}, properties=props)
        return {(d["candidate_id"], d["version"]): d["last_updated"] for d in docs}
    finally:
        results.candidates.close()


def test_results_yaml_template_loads():
    """The shipped template names maggma MongoStores for the three collections."""
    res = load_results_store(ROOT / "stores" / "results.yaml")
    for store, coll in (
        (res.candidates, "candidates"),
        (res.sources, "candidate_sources"),
        (res.sections, "candidate_sections"),
    ):
        assert isinstance(store, MongoStore) and store.collection_name == coll
    assert res.candidates.key == "candidate_id"
    d = res.as_dict()
    assert d["candidates"]["@class"] == "MongoStore" and d["index_path"] is None
    assert not isinstance(res.candidates, MontyStore)


def _doc(cid: str, version: int, formula: str) -> dict:
    return {
        "candidate_id": cid,
        "campaign": "c",
        "version": version,
        "reduced_formula": formula,
        "elements": ["Fe"],
        "content_hash": f"{cid}{version}{formula}",
    }


def test_versions_sharing_candidate_ids_keep_their_own_documents(tmp_path):
    """A second version of a campaign (same candidate ids) neither overwrites nor removes the
    first one's documents: on a MongoDB-like store (upsert path) and in the SQLite index."""
    from maggma.stores import MemoryStore

    from smoacs_flows.stores.builder import _bulk_replace
    from smoacs_flows.stores.index import QueryIndex
    from smoacs_flows.stores.query import Filter

    store = MemoryStore("candidates", key="candidate_id")  # MongoStore on mongomock
    store.connect()
    v1 = [_doc("c-b000-c0000", 1, "Fe"), _doc("c-b000-c0001", 1, "FeO")]
    v2 = [_doc("c-b000-c0000", 2, "Fe2")]
    _bulk_replace(store, v1, {"campaign": "c", "version": 1})
    _bulk_replace(store, v2, {"campaign": "c", "version": 2})
    _bulk_replace(store, v1, {"campaign": "c", "version": 1})  # rebuilt: same answer
    got = sorted((d["candidate_id"], d["version"], d["reduced_formula"]) for d in store.query({}))
    assert got == [
        ("c-b000-c0000", 1, "Fe"),
        ("c-b000-c0000", 2, "Fe2"),
        ("c-b000-c0001", 1, "FeO"),
    ]

    index = QueryIndex(tmp_path / "index.sqlite")
    index.replace("c", 1, v1)
    index.replace("c", 2, v2)
    rows = index.select(Filter(), "candidate_id", False, None, {"c": 1})
    assert [r["formula"] for r, _ in rows] == ["Fe", "FeO"]
    rows = index.select(Filter(), "candidate_id", False, None, {"c": 2})
    assert [r["formula"] for r, _ in rows] == ["Fe2"]
    index.close()


def test_query_index_from_before_is_migrated(tmp_path):
    """An index file whose rows were keyed by candidate id alone keeps its rows and takes a
    second version."""
    import sqlite3

    from smoacs_flows.stores.index import QueryIndex

    path = tmp_path / "old.sqlite"
    cols = ", ".join(f"{c} " for c in QueryIndex.COLUMNS if c != "candidate_id")
    conn = sqlite3.connect(path)
    conn.execute(
        f"CREATE TABLE candidates (candidate_id TEXT PRIMARY KEY, {cols}, elements TEXT, "
        "content_hash TEXT, row TEXT, structure TEXT)"
    )
    conn.commit()
    conn.close()
    index = QueryIndex(path)
    index.replace("c", 1, [_doc("c-b000-c0000", 1, "Fe")])
    index.close()
    index = QueryIndex(path)
    index.replace("c", 2, [_doc("c-b000-c0000", 2, "Fe2")])
    assert index.hashes("c", 1) == {"c-b000-c0000": "c-b000-c00001Fe"}
    assert index.hashes("c", 2) == {"c-b000-c0000": "c-b000-c00002Fe2"}
    index.close()


def test_builder_command_writes_an_mrun_file(tmp_path, capsys):
    """``smoacs-flows builder FILE``: the builder as resolved here, private, loadable."""
    from smoacs_flows.cli import main
    from smoacs_flows.makers.launchpad import embedded_launchpad_path

    res_yaml = _results_yaml(tmp_path / "res")
    out = tmp_path / "b" / "builder.json"
    assert main(["builder", str(out), "--results", str(res_yaml)]) == 0
    assert "mrun" in capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o600
    b = loadfn(out)
    assert isinstance(b, CandidatesBuilder)
    assert b.launchpad == {"embedded": str(embedded_launchpad_path().resolve())}
    assert b.results.candidates.database_path == str(tmp_path / "res")
    assert b.job_store.docs_store.database_path.startswith(os.environ["SMOACS_HOME"])
    # a LaunchPad file is kept as its path (its credentials are not copied into the JSON)
    lpfile = tmp_path / "my_launchpad.yaml"
    lpfile.write_text("host: mongodb.example.org\nname: fw\npassword: s3cret\n")
    assert main(["builder", str(out), "--launchpad", str(lpfile)]) == 0
    assert loadfn(out).launchpad == str(lpfile) and "s3cret" not in out.read_text()
    assert main(["builder", str(out), "--launchpad", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
