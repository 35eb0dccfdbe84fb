"""Fireworks a person defused or paused (FireWorks' own ``defuse_fw`` / ``pause_fw``) are shown
by ``status`` and released by ``resume --defused``; ``resume --incar`` checks its tags as
``submit`` does, before anything is written."""

from __future__ import annotations

import json

import pytest

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from tests.chaos._cli import call
from tests.chaos.test_fuzz import campaign_home, in_campaign_home  # noqa: F401


def _states(lp: EmbeddedLaunchPad) -> dict[int, str]:
    with lp.session(write=False):
        return {d["fw_id"]: d["state"] for d in lp.fireworks.find({}, {"fw_id": 1, "state": 1})}


def test_defused_and_paused_are_shown_and_released(in_campaign_home) -> None:  # noqa: F811
    lp = EmbeddedLaunchPad()
    ids = sorted(_states(lp))
    with lp.session():
        lp.defuse_fw(ids[0])
        lp.pause_fw(ids[1])
    st = call(["status", "fuzzflow", "--quiet"])
    assert st.code == 0, st
    assert "DEFUSED" in st.out and "PAUSED" in st.out
    assert st.out.count("held:") == 2 and "resume --defused" in st.out
    js = json.loads(call(["status", "fuzzflow", "--json", "--quiet"]).out)
    assert {h["state"] for h in js["held"]} == {"DEFUSED", "PAUSED"}
    plain = call(["resume", "fuzzflow"])
    assert plain.code == 0 and plain.out.count("held:") == 2, plain
    assert _states(lp)[ids[0]] == "DEFUSED"  # only listed
    dry = call(["resume", "fuzzflow", "--defused", "--dry-run"])
    assert dry.code == 0 and "would release" in dry.out
    assert _states(lp)[ids[0]] == "DEFUSED"
    done = call(["resume", "fuzzflow", "--defused"])
    assert done.code == 0 and done.out.count("released") == 2, done
    after = _states(lp)
    assert after[ids[0]] not in ("DEFUSED", "PAUSED") and after[ids[1]] not in ("DEFUSED", "PAUSED")


@pytest.mark.parametrize(
    ("incar", "needle"),
    [("NCORE=4,ENCUTT=500", "ENCUTT"), ("NCOR=4", "NCOR"), ("ENCUT=abc", "ENCUT")],
)
def test_resume_incar_is_checked(in_campaign_home, incar, needle) -> None:  # noqa: F811
    home = in_campaign_home[0]
    before = (home / "launchpad" / "fireworks.json").read_bytes()
    o = call(["resume", "fuzzflow", "--incar", incar])
    assert o.code == 2 and needle in o.err, o
    assert (home / "launchpad" / "fireworks.json").read_bytes() == before


def test_resume_help_names_fw_config_file() -> None:
    o = call(["resume", "--help"])
    assert "FW_CONFIG_FILE" in o.out and "--defused" in o.out
