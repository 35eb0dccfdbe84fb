"""A MongoDB LaunchPad that was never reset: the first submit initialises it (as ``lpad reset``
would) only when it is empty, and a failed submit gives its version number back. The server is
FireWorks' own mongomock-persistence stand-in (``MONGOMOCK_SERVERSTORE_FILE``), in real
processes, so FireWorks' MongoDB code path runs unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoacs_flows.makers.submit import submit

from ._campaign import tiny_campaign, write_campaign
from ._mongo import mongomock_launchpad


def _cli(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MONGOMOCK_SERVERSTORE_FILE": str(tmp_path / "server.json"),
        "SMOACS_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "smoacs_flows.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _fresh(tmp_path) -> tuple[str, str]:
    (tmp_path / "server.json").write_text("{}")
    lp = tmp_path / "my_launchpad.yaml"
    lp.write_text("host: localhost\nport: 27017\nname: never_reset\n")
    camp = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="fresh"))
    return str(lp), str(camp)


def test_first_submit_to_a_fresh_launchpad(tmp_path) -> None:
    lp, camp = _fresh(tmp_path)
    out = _cli(tmp_path, "submit", camp, "--launchpad", lp, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"] == 1
    out = _cli(tmp_path, "status", "fresh", "--launchpad", lp, "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    fws = json.loads(out.stdout)["fireworks"]
    assert sum(sum(v.values()) for v in fws.values()) > 0
    # the second submit is the ordinary "already there" refusal, not an id error
    out = _cli(tmp_path, "submit", camp, "--launchpad", lp)
    assert out.returncode == 2 and "--new-version" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_database_with_workflows_but_no_counter_is_left_alone(tmp_path) -> None:
    lp, camp = _fresh(tmp_path)
    code = (
        "from fireworks import LaunchPad; "
        "lp = LaunchPad(host='localhost', port=27017, name='never_reset'); "
        "lp.workflows.insert_one({'name': 'someone else', 'nodes': [1]})"
    )
    env = {**os.environ, "MONGOMOCK_SERVERSTORE_FILE": str(tmp_path / "server.json")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    before = (tmp_path / "server.json").read_text()
    out = _cli(tmp_path, "submit", camp, "--launchpad", lp)
    assert out.returncode == 2, out.stderr
    assert "1 workflows" in out.stderr and "left as it is" in out.stderr
    after = json.loads((tmp_path / "server.json").read_text())["never_reset"]
    # no document written or removed (FireWorks' client may leave empty collections behind)
    docs = {k: v["documents"] for k, v in after.items() if v["documents"]}
    assert docs == {k: v["documents"] for k, v in json.loads(before)["never_reset"].items()}


def test_a_failed_submit_burns_no_version(tmp_path, monkeypatch) -> None:
    lp = mongomock_launchpad(monkeypatch, "burn")
    camp = write_campaign(tmp_path / "c.yaml", tiny_campaign(name="burn"))
    real = type(lp).add_wf

    def fail(self, wf, *a, **k):
        raise RuntimeError("connection lost half-way")

    monkeypatch.setattr(type(lp), "add_wf", fail)
    with pytest.raises(RuntimeError):
        submit(camp, lp)
    monkeypatch.setattr(type(lp), "add_wf", real)
    assert submit(camp, lp).version == 1  # not 2, and no --new-version needed
