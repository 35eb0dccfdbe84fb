"""The relaxation method names: one list read by the settings schema, ``screen --method`` and
``relax``; the ``screen`` command line starts without numpy or torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.makers.settings import stage_settings
from smoacs_flows.screening.methods import METHODS
from tests.makers._campaign import ROOT, tiny_campaign

#: the documented paths (docs/architecture.md, "Relaxation engine")
DOCUMENTED = ["torchsim", "batched", "atomate2"]

_PROBE = """
import argparse, json, sys
from smoacs_flows.screening import cli
p = argparse.ArgumentParser(prog="x")
sub = p.add_subparsers(dest="command")
cli.register(sub)
screen = sub.choices["screen"]
method = next(a for a in screen._actions if a.dest == "method")
print(json.dumps({"heavy": sorted(m for m in ("numpy", "torch") if m in sys.modules),
                  "choices": list(method.choices)}))
p.parse_args(["screen", "c.jsonl", "--out", "o", "--method", "nope"])
"""


def test_screen_cli_starts_without_numpy_or_torch():
    r = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    out = json.loads(r.stdout.splitlines()[0])
    assert out["heavy"] == []
    assert out["choices"] == DOCUMENTED
    # an unknown method is refused by argparse (exit 2), naming the allowed ones
    assert r.returncode == 2
    assert "--method: invalid choice: 'nope'" in r.stderr
    assert all(repr(m) in r.stderr for m in DOCUMENTED)


def test_settings_accept_every_method_and_name_them_on_a_typo():
    assert list(METHODS) == DOCUMENTED
    for m in DOCUMENTED:
        camp = campaign_from_dict(tiny_campaign(stages={"screening": {"method": m}}), base_dir=ROOT)
        assert stage_settings(camp).screening.method == m
    camp = campaign_from_dict(tiny_campaign(stages={"screening": {"method": "ase"}}), base_dir=ROOT)
    with pytest.raises(SpecError) as exc:
        stage_settings(camp)
    assert str(exc.value) == (
        "campaign tiny: stages.screening.method: Input should be 'torchsim', 'batched' or "
        "'atomate2'"
    )


def test_relax_refuses_an_unknown_method():
    from smoacs_flows.screening.relax import relax

    with pytest.raises(InputError) as exc:
        relax([], method="ase")
    assert str(exc.value) == "unknown relaxation method 'ase' (torchsim, batched, atomate2)"
