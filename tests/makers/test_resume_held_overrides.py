"""``resume --defused`` with queue overrides: the fireworks it releases (FireWorks'
``reignite_fw``) get the same ``--walltime``/``--cores``/``--nodes`` as the reruns, so a
defused job goes back to the queue with the new size and time, not the old ones."""

from __future__ import annotations

import pytest

from smoacs_flows.cli import main
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, embedded_launchpad_path
from smoacs_flows.makers.submit import submit
from tests.makers._campaign import tiny_campaign, write_campaign


@pytest.fixture
def defused(tmp_path) -> tuple[EmbeddedLaunchPad, int]:
    """A submitted campaign (no worker ran) with one proposal firework defused."""
    submit(write_campaign(tmp_path / "c.yaml", tiny_campaign(name="held", n=4, batch=2)))
    lp = EmbeddedLaunchPad()
    with lp.session():
        fw_id = min(d["fw_id"] for d in lp.fireworks.find({"state": "READY"}))
        lp.defuse_fw(fw_id)
    return lp, fw_id


def _doc(lp: EmbeddedLaunchPad, fw_id: int) -> dict:
    with lp.session(write=False):
        return lp.fireworks.find_one({"fw_id": fw_id})


def test_released_fireworks_get_the_queue_overrides(defused, capsys):
    lp, fw_id = defused
    argv = ["resume", "held", "--defused", "--walltime", "90", "--cores", "16", "--nodes", "2"]
    before = embedded_launchpad_path().read_bytes()
    assert main([*argv, "--dry-run"]) == 0
    assert "[changes: _queueadapter]" in capsys.readouterr().out
    assert embedded_launchpad_path().read_bytes() == before  # a dry run writes nothing

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"(fw {fw_id}," in out and "[changes: _queueadapter]" in out, out
    doc = _doc(lp, fw_id)
    assert doc["state"] == "READY"  # reignited: no parents, so ready to launch
    qa = doc["spec"]["_queueadapter"]
    # 90 minutes as HH:MM:SS (PBS would read a bare 90 as seconds); the size per scheduler
    assert qa["walltime"] == "01:30:00" and qa["nnodes"] == 2 and qa["ppnode"] == 16
    assert qa["nodes"] == 2 and qa["cpus_per_task"] == 16  # SLURM's keys: one threaded process


def test_released_without_overrides_keep_their_spec(defused, capsys):
    lp, fw_id = defused
    assert main(["resume", "held", "--defused"]) == 0
    assert "[changes" not in capsys.readouterr().out
    doc = _doc(lp, fw_id)
    assert doc["state"] == "READY" and "_queueadapter" not in doc["spec"]
