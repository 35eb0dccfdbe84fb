"""The example half-metal campaign runs end to end with the real CHGNet on CPU."""

from __future__ import annotations

import json
import math

import pytest
from pymatgen.core import Structure

from smoacs_flows.campaign import load_campaign
from smoacs_flows.cli import main
from smoacs_flows.smoacs.exclusions import preset_elements
from smoacs_flows.smoacs.oxidation import is_charge_neutral

from .helpers import ROOT


@pytest.mark.slow
def test_halfmetal_campaign_end_to_end(tmp_path) -> None:
    path = ROOT / "campaigns" / "halfmetal_small.yaml"
    camp = load_campaign(path)
    out = tmp_path / "hm"
    code = main(["propose", str(path), "--out", str(out), "--n", "8", "--steps", "8", "--quiet"])
    assert code == 0
    records = [json.loads(x) for x in (out / "proposals.jsonl").read_text().splitlines()]
    assert len(records) == 8
    banned = set()
    for item in camp.exclude:
        banned |= set(preset_elements(item))
    for rec in records:
        s = Structure.from_dict(rec["structure"])
        assert not banned & set(rec["elements"])
        assert is_charge_neutral(s.composition, "ionic+metallic")
        e = rec["predicted"]["chgnet.energy_per_atom"]
        m = rec["predicted"]["chgnet.magmom_abs_total"]
        assert math.isfinite(e) and -15 < e < 5
        assert m >= 0 and len(rec["predicted"]["chgnet.site_magmoms"]) == len(s)
        assert {"magmom_integer", "magnetic", "max_elements"} <= set(rec["success"])
        assert rec["success"]["magnetic"] == (m >= 1.0)
