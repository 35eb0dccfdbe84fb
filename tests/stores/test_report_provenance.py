"""The report a scientist can cite: a provenance block (campaign YAML, code version and git
revision, predictors with their weights' sha256, DFT settings, hull), the proposal loss curves
and CHGNet's Σ|m_i| beside the DFT moment — from a real tiny campaign, rendered by chromium."""

from __future__ import annotations

import copy
import hashlib
import html
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from smoacs_flows.cli import main
from tests.makers._campaign import CHEAP_STAGES, tiny_campaign, write_campaign
from tests.stores.test_report import _headless, _Page

ROOT = Path(__file__).resolve().parents[2]


def _chgnet_weights() -> Path:
    """The pretrained CHGNet 0.3.0 weights shipped in the chgnet wheel."""
    origin = Path(importlib.util.find_spec("chgnet").origin).parent
    (path,) = (origin / "pretrained" / "0.3.0").glob("*.pth.tar")
    return path


@pytest.mark.slow
def test_report_provenance_loss_curves_and_chgnet_moment(tmp_path, capsys):
    stages = copy.deepcopy(CHEAP_STAGES)
    spec = tiny_campaign(name="prov", n=2, batch=1, steps=3, stages=stages)
    path = write_campaign(tmp_path / "c.yaml", spec)
    assert main(["run", str(path), "--poll", "1"]) == 0
    out = tmp_path / "r.html"
    assert main(["report", "prov", "--out", str(out)]) == 0
    capsys.readouterr()
    text = out.read_text(encoding="utf-8")
    prov = text[text.index('<section id="provenance">') :]

    # the predictors with the sha256 of the weights they loaded, computed independently here
    weights = _chgnet_weights()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert f"<code>{html.escape(str(weights))}</code>" in prov and digest in prov
    # the code version and the git revision of this checkout
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert f"git {head}" in prov
    # the campaign YAML as validated, parsed back
    yml = re.search(r'<pre class="yaml">(.*?)</pre>', prov, re.S).group(1)
    back = yaml.safe_load(html.unescape(yml))
    assert back["name"] == "prov" and len(back["losses"]) == len(spec["losses"])
    for given, kept in zip(spec["losses"], back["losses"], strict=True):
        assert given.items() <= kept.items()  # as written, plus the validated defaults
    # DFT settings with every default (GPAW's too), and the hull named
    dft = json.loads(html.unescape(re.search(r"<pre>(\{.*?\})</pre>", prov, re.S).group(1)))
    assert dft["engine"] == "gpaw" and dft["gpaw"]["ecut"] == 150
    assert dft["gpaw"]["dense_kpoint_density"] == 1.0 and "pdos" in dft["gpaw"]
    assert "hull (E<sub>hull</sub> against)" in prov

    # CHGNet Σ|m_i| beside the DFT moment in the final table
    assert "CHGNet Σ|m<sub>i</sub>| (μB/f.u.)" in text
    head_cells = re.findall(r"<th>(.*?)</th>", text[text.index("<table>") :])
    assert (
        head_cells.index("CHGNet Σ|m<sub>i</sub>| (μB/f.u.)")
        == head_cells.index("DFT moment (μB/f.u.)") + 1
    )

    # the loss curves: one per optimiser batch, rendered by a real browser with the rest
    page = _Page(text)
    assert "loss_curves" in page.charts and "2 batch(es)" in text
    rendered = _Page(_headless(tmp_path, "--dump-dom", out.as_uri()).stdout).body
    assert json.loads(rendered["data-charts"]) == page.charts
