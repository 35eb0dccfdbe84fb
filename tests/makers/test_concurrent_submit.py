"""Campaign versions on a MongoDB LaunchPad are claimed atomically: two concurrent submitters
never get the same version.

FireWorks' own ``LaunchPad`` runs here on one shared mongomock client (no MongoDB server is
reachable in tests), so the LaunchPad code path is the MongoDB one (no embedded file lock).
Each test forces the interleaving that loses with a check-then-add: both submitters have read
the LaunchPad before either adds its workflow.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fireworks import LaunchPad

import smoacs_flows.makers.submit as submit_mod
from smoacs_flows.errors import SmoacsError
from smoacs_flows.makers.submit import VERSIONS_COLLECTION, submit
from tests.makers._campaign import tiny_campaign, write_campaign
from tests.makers._mongo import mongomock_launchpad

#: s a submitter waits for the other at the forced interleaving (only a failing run waits it
#: out: a slow or loaded machine must not turn a late arrival into a failure)
WAIT = 300


@pytest.fixture
def mongo_lp(monkeypatch) -> LaunchPad:
    """A FireWorks LaunchPad (the MongoDB class, not the embedded one) on a mongomock client."""
    return mongomock_launchpad(monkeypatch, "fw_versions")


def _race(n: int, target: Any) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads; returns results or exceptions in order."""
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * WAIT)
    return out


def test_concurrent_new_version_gets_distinct_versions(tmp_path, mongo_lp, monkeypatch):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="conc"))
    assert submit(path, mongo_lp).version == 1
    # both submitters reach add_wf before either has added: a check-then-add gives both v2
    barrier = threading.Barrier(2, timeout=WAIT)
    add_wf = LaunchPad.add_wf

    def slow_add(self: LaunchPad, wf: Any, *a: Any, **k: Any) -> Any:
        barrier.wait()
        return add_wf(self, wf, *a, **k)

    monkeypatch.setattr(LaunchPad, "add_wf", slow_add)
    subs = _race(2, lambda i: submit(path, mongo_lp, new_version=True))
    assert not [s for s in subs if isinstance(s, BaseException)], subs
    assert sorted(s.version for s in subs) == [2, 3]
    assert len({s.tag for s in subs}) == 2
    # the LaunchPad holds three workflows, each version once, each firework with its own tag
    assert submit_mod.existing_versions(mongo_lp, "conc") == [1, 2, 3]
    for s in subs:
        tagged = mongo_lp.fireworks.count_documents({"spec.tags": s.tag})
        assert tagged == s.n_fireworks
    assert mongo_lp.db[VERSIONS_COLLECTION].find_one({"_id": "conc"})["version"] == 3


def test_concurrent_plain_submits_one_refused(tmp_path, mongo_lp, monkeypatch):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="plain"))
    # both read "no version on the LaunchPad" before either claims one
    barrier = threading.Barrier(2, timeout=WAIT)
    seen = submit_mod.existing_versions

    def slow_seen(lp: LaunchPad, name: str) -> list[int]:
        out = seen(lp, name)
        barrier.wait()
        return out

    monkeypatch.setattr(submit_mod, "existing_versions", slow_seen)
    subs = _race(2, lambda i: submit(path, mongo_lp))
    ok = [s for s in subs if not isinstance(s, BaseException)]
    refused = [s for s in subs if isinstance(s, BaseException)]
    assert [s.version for s in ok] == [1]
    assert len(refused) == 1 and isinstance(refused[0], SmoacsError)
    assert "already claimed" in str(refused[0]) and "--new-version" in str(refused[0])
    monkeypatch.setattr(submit_mod, "existing_versions", seen)
    assert seen(mongo_lp, "plain") == [1]


def test_counter_starts_above_versions_submitted_before_it(tmp_path, mongo_lp):
    """A campaign submitted before the counter existed (no counter document) continues from
    its highest version on the LaunchPad."""
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="old"))
    assert submit(path, mongo_lp).version == 1
    assert submit(path, mongo_lp, new_version=True).version == 2
    mongo_lp.db[VERSIONS_COLLECTION].delete_many({})
    assert submit(path, mongo_lp, new_version=True).version == 3
