"""``status`` and ``resume --dry-run`` on a MongoDB LaunchPad (FireWorks' own ``LaunchPad``
class on a mongomock client: no server here), not only on the embedded one."""

from __future__ import annotations

import pytest
from fireworks import LaunchPad

from smoacs_flows.makers.recovery import find_failed
from smoacs_flows.makers.run import fizzled_reasons, stage_counts
from smoacs_flows.makers.submit import submit
from smoacs_flows.stores.cli import campaign_status
from smoacs_flows.stores.results import embedded_results_store
from tests.makers._campaign import tiny_campaign, write_campaign
from tests.makers._mongo import mongomock_launchpad


@pytest.fixture
def mongo_lp(monkeypatch) -> LaunchPad:
    """A FireWorks LaunchPad (the MongoDB class) on a mongomock client."""
    return mongomock_launchpad(monkeypatch, "fw_status")


def test_status_on_a_mongodb_launchpad(tmp_path, mongo_lp):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="mst", n=4, batch=2))
    sub = submit(path, mongo_lp)
    # independent count: FireWorks' own query of the fireworks collection
    expect = mongo_lp.fireworks.count_documents({"spec.tags": sub.tag, "spec.stage": "propose"})
    assert expect == 2
    counts = stage_counts(mongo_lp, sub.tag)
    assert counts["propose"] == {"READY": 2} and counts["summary"] == {"WAITING": 1}
    assert fizzled_reasons(mongo_lp, sub.tag) == [] and find_failed(mongo_lp, sub.tag) == []
    with embedded_results_store() as results:
        st = campaign_status(mongo_lp, results, "mst", 1, sub.tag)
    assert st["fireworks"]["propose"]["READY"] == 2 and st["lost"] == []
