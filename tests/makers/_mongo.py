"""FireWorks' own (MongoDB) ``LaunchPad`` on a mongomock client: no MongoDB server is reachable
in tests, but the LaunchPad code path is the MongoDB one (no embedded file lock)."""

from __future__ import annotations

import mongomock
import pytest
from fireworks import LaunchPad


def mongomock_launchpad(monkeypatch: pytest.MonkeyPatch, name: str) -> LaunchPad:
    """A reset ``LaunchPad`` (database ``name``) whose MongoClient is one mongomock client."""
    client = mongomock.MongoClient()
    monkeypatch.setattr("fireworks.core.launchpad.MongoClient", lambda *a, **k: client)
    # FireWorks' GridFS fallback (documents over 16 MB) needs a pymongo database: off here
    monkeypatch.setattr("fireworks.core.launchpad.GRIDFS_FALLBACK_COLLECTION", None)
    lp = LaunchPad(host="mongodb.test", port=27017, name=name)
    lp.reset("", require_password=False)
    assert type(lp) is LaunchPad
    return lp
