"""The HTML campaign report: funnel counts, and the page rendered by a real headless chromium."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymatgen.core import Structure

from smoacs_flows.stores.report import funnel_counts, write_report

TEMPLATES = Path(__file__).resolve().parents[2] / "campaigns" / "templates"
SUPPLY_RISK = ["Co", "Ga", "Ir", "Li", "Ni", "Pt"]
TM = ["Mn", "Fe", "Cr", "V", "Ti", "Cu", "Co", "Ni", "Ru", "Rh", "Pd", "Zr", "Sc"]
MAIN = ["Al", "Si", "Ge", "Sn", "Sb", "Ga", "In", "As", "Bi", "P", "Te", "Se"]
VERDICTS = ["near_half_metal", "magnetic_metal", "nonmagnetic_metal", "semiconductor"]
EVIL_ID = "demo-<blink>evil</blink>&\"x'"


# ----------------------------------------------------------------------------- synthetic data


def _structure(
    template: Structure, rng: random.Random, allowed_tm: list[str], allowed_main: list[str]
) -> Structure:
    """``template`` with its elements replaced: transition metals on the first sites, a
    main-group element on the last; sometimes a quaternary (one TM site differs)."""
    n = len(template)
    tms = rng.sample(allowed_tm, 3)
    species = [tms[0]] * (n - 1) + [rng.choice(allowed_main)]
    if n >= 3:
        species[-2] = tms[1]
    if n == 4 and rng.random() < 0.4:
        species[0] = tms[2]
    lattice = template.lattice.matrix * rng.uniform(0.97, 1.05)
    return Structure(lattice, species, template.frac_coords)


def synthetic_dos(
    efermi: float, gapped: str = "down", gap: tuple[float, float] = (-0.4, 0.6)
) -> dict[str, Any]:
    """A half-metallic DOS: one channel metallic at E_F, the other with a gap around E_F."""
    e = np.linspace(efermi - 8.0, efermi + 8.0, 1601)
    x = e - efermi
    rng = np.random.default_rng(int(efermi * 1000))
    peaks = rng.uniform(-7, 7, 14)

    def bands(shift: float) -> np.ndarray:
        return (
            sum(np.exp(-((x - p - shift) ** 2) / 0.18) * rng.uniform(0.6, 2.2) for p in peaks)
            + 0.15
        )

    metal, other = bands(-0.3), bands(0.5)
    other[(x > gap[0]) & (x < gap[1])] = 0.0
    up, down = (metal, other) if gapped == "down" else (other, metal)
    return {"energies": e.tolist(), "up": up.tolist(), "down": down.tolist(), "efermi": efermi}


def synthetic_campaign(
    n: int,
    seed: int = 0,
    excluded: list[str] | None = None,
    campaign: str = "demo",
    n_half_metals: int = 2,
    evil: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """``n`` candidate documents shaped like :func:`~smoacs_flows.stores.candidates.assemble`
    output (real pymatgen structures from the campaign templates), and the DOS of the
    half-metals. The first ``n_half_metals`` are DFT half-metals; with ``evil`` the next one
    is a S.U.N. candidate whose id holds HTML."""
    rng = random.Random(seed)
    excl = set(excluded or [])
    tm = [e for e in TM if e not in excl]
    main = [e for e in MAIN if e not in excl]
    templates = {p.stem: Structure.from_file(p) for p in sorted(TEMPLATES.glob("*.cif"))}
    names = sorted(templates)
    docs, dos = [], {}
    for i in range(n):
        tid = rng.choice(names)
        s = _structure(templates[tid], rng, tm, main)
        comp = s.composition
        cid = f"{campaign}-b{i % 4}-{i:05d}"
        r = rng.random()
        if i < n_half_metals:
            stage, rej = "dft", None
        elif evil and i == n_half_metals:
            cid, stage, rej = EVIL_ID, "sun", None
        elif r < 0.15:
            stage, rej = "proposed", {"stage": "prefilter", "reasons": ["predicted gap 1.2 eV"]}
        elif r < 0.25:
            stage, rej = "prefiltered", {"stage": "relax", "reasons": ["relaxation diverged"]}
        elif r < 0.45:
            stage, rej = "relaxed", {"stage": "stability", "reasons": ["E_hull 0.31 eV/atom"]}
        elif r < 0.55:
            stage, rej = "stable", {"stage": "uniqueness/novelty", "reasons": ["not novel"]}
        elif r < 0.8:
            stage, rej = "sun", None
        else:
            stage, rej = "dft", None
        rank = ["proposed", "prefiltered", "relaxed", "stable", "sun", "dft"].index(stage)
        relaxed = s.copy()
        relaxed.scale_lattice(s.volume * rng.uniform(0.95, 1.05))
        ehull = round(rng.uniform(0.0, 0.08) if rank >= 3 else rng.uniform(0.1, 0.5), 4)
        gap = round(rng.gammavariate(1.2, 0.3), 4)
        dft = None
        if stage == "dft":
            hm = i < n_half_metals
            verdict = "half_metal" if hm else rng.choice(VERDICTS)
            mom = round(rng.choice([1, 2, 3, 4, 5]) + (0 if hm else rng.uniform(-0.4, 0.4)), 3)
            efermi = round(rng.uniform(4.0, 8.0), 3)
            hm_gap = round(rng.uniform(0.1, 0.5), 3)
            dft = {
                "engine": "gpaw",
                "verdict": verdict,
                "efermi": efermi,
                "moment_per_fu": mom,
                "total_moment": mom,
                "polarisation": 1.0 if hm else round(rng.uniform(-0.8, 0.8), 3),
                "gap_up": 0.0,
                "gap_down": 1.0 if hm else 0.0,
                "half_metallic_gap": hm_gap if hm else None,
                "formula": comp.formula,
                "reduced_formula": comp.reduced_formula,
                "structure": relaxed.as_dict(),
                "has_dos": hm,
            }
            if hm:
                dos[cid] = synthetic_dos(efermi, gap=(-hm_gap - 0.3, hm_gap))
        docs.append(
            {
                "candidate_id": cid,
                "campaign": campaign,
                "version": 1,
                "batch": i % 4,
                "template": tid,
                "variant": None,
                "formula": comp.formula,
                "reduced_formula": comp.reduced_formula,
                "elements": sorted(e.symbol for e in comp.elements),
                "nelements": len(comp.elements),
                "natoms": len(s),
                "stage": stage,
                "rejected": rej,
                "state": "done" if rej or stage == "dft" else "pending",
                "failure": None,
                "smoacs": {
                    "predicted": {
                        "alignn_mbj": {"band_gap": gap},
                        "chgnet": {"energy_per_atom": rng.uniform(-7, -4)},
                    },
                    "losses": {"total": rng.uniform(0, 2)},
                    "success": {"all": True},
                },
                "structure": s.as_dict(),
                "final_structure": (dft or {}).get("structure")
                or (relaxed.as_dict() if rank >= 2 else s.as_dict()),
                "relax": (
                    {
                        "energy_per_atom": round(rng.uniform(-7.5, -4.5), 4),
                        "converged": True,
                        "mlip": "chgnet",
                    }
                    if rank >= 2
                    else None
                ),
                "e_above_hull": ehull if rank >= 3 else None,
                "sun": (
                    {"stable": True, "unique": True, "novel": rank >= 4, "sun": rank >= 4}
                    if rank >= 3
                    else None
                ),
                "dft": dft,
                "provenance": {"job_uuids": {"dft": f"uuid-{i}"} if dft else {}},
            }
        )
    return docs, dos


# ----------------------------------------------------------------------------- helpers


class _Page(HTMLParser):
    """Tags, body attributes, charts and CIF links of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.body: dict[str, str] = {}
        self.charts: list[str] = []
        self.links: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "body":
            self.body = a
        if "chart" in a.get("class", "").split():
            self.charts.append(a.get("data-chart", ""))
        if tag == "a" and "cif" in a.get("class", "").split():
            self.links.append(a)
        self.urls += [v for k, v in a.items() if k in ("src", "href", "xlink:href")]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: `make test` installs it (apt package chromium)")


def _headless(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


# ----------------------------------------------------------------------------- tests


def test_funnel_counts_hand_made() -> None:
    docs = [
        {"stage": "proposed", "rejected": {"stage": "prefilter"}},
        {"stage": "proposed"},  # pending: not prefiltered yet
        {"stage": "prefiltered", "rejected": {"stage": "relax"}},
        {"stage": "relaxed", "rejected": {"stage": "stability"}},
        {"stage": "stable", "rejected": {"stage": "uniqueness/novelty"}},
        {"stage": "sun"},
        {"stage": "sun", "dft": None},
        {"stage": "dft", "dft": {"verdict": "magnetic_metal"}},
        {"stage": "dft", "dft": {"verdict": "half_metal"}},
        {"stage": "dft", "dft": {"verdict": "half_metal"}},
        {"stage": None, "dft": "garbage"},  # counts as proposed only
        {},
    ]
    assert funnel_counts(docs) == [
        ("proposed", 12),
        ("prefiltered", 8),
        ("relaxed", 7),
        ("S.U.N.", 5),
        ("DFT", 3),
        ("half-metal", 2),
    ]
    assert funnel_counts([]) == [
        ("proposed", 0),
        ("prefiltered", 0),
        ("relaxed", 0),
        ("S.U.N.", 0),
        ("DFT", 0),
        ("half-metal", 0),
    ]


def test_report_tolerates_sparse_docs(tmp_path: Path) -> None:
    docs = [
        {},
        {
            "candidate_id": None,
            "stage": "sun",
            "elements": None,
            "dft": None,
            "final_structure": {"sites": "broken"},
            "smoacs": None,
            "relax": None,
        },
        {
            "candidate_id": "x",
            "stage": "dft",
            "elements": ["Fe", "<Zz>"],
            "dft": {"verdict": "half_metal", "moment_per_fu": float("nan")},
        },
    ]
    out = write_report(docs, tmp_path / "r.html", "sparse", dos={"x": {"energies": None}})
    text = out.read_text()
    assert "<Zz>" not in text and "&lt;Zz&gt;" not in text  # unknown symbols never drawn
    assert "No DOS plotted for: x" in text
    page = _Page(text)
    assert int(page.body["data-charts-expected"]) == len(page.charts)
    assert {"funnel", "periodic_table", "nelements"} <= set(page.charts)
    assert not [c for c in page.charts if c.startswith("dos:")]
    # nothing here predicted a band gap: the report says nothing about one (no empty chart,
    # no "no data yet"); the DFT moment is a later stage's, so its absence is named
    assert "band gap" not in text.lower() and "band_gap" not in page.charts
    assert "No data yet for:" in text and "DFT moment" in text
    empty = write_report([], tmp_path / "empty.html", "empty")
    assert _Page(empty.read_text()).charts == ["funnel", "periodic_table"]


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    docs, dos = synthetic_campaign(30, seed=3, excluded=SUPPLY_RISK)
    base, _ = synthetic_campaign(30, seed=4, campaign="demo-nomask", evil=False)
    hm_ids = sorted(
        d["candidate_id"] for d in docs if (d["dft"] or {}).get("verdict") == "half_metal"
    )
    assert len(hm_ids) == 2 and set(dos) == set(hm_ids)
    out = write_report(
        docs,
        tmp_path / "report.html",
        "Demo <campaign>",
        dos=dos,
        excluded=SUPPLY_RISK,
        compare_docs=base,
        compare_label="without mask",
    )
    text = out.read_text(encoding="utf-8")
    page = _Page(text)

    # written: every expected chart, all self-contained
    written = page.charts
    assert int(page.body["data-charts-expected"]) == len(written)
    assert {
        "funnel",
        "periodic_table",
        "periodic_table_compare",
        "nelements",
        "band_gap",
        "mlip_energy",
        "dft_moment",
    } <= set(written)
    assert sorted(c for c in written if c.startswith("dos:")) == [f"dos:{c}" for c in hm_ids]
    assert all(u.startswith(("data:", "#")) for u in page.urls), page.urls
    assert "<link" not in text and " src=" not in text

    # HTML from docs is escaped (text and attributes), never parsed as markup
    assert "<blink>" not in text and "&lt;blink&gt;evil&lt;/blink&gt;&amp;&quot;x&#x27;" in text
    assert "<campaign>" not in text and "Demo &lt;campaign&gt;" in text
    assert "blink" not in page.tags

    # one CIF link per final candidate, each a CIF pymatgen parses back to its formula
    final = {d["candidate_id"]: d for d in docs if d["stage"] in ("sun", "dft")}
    assert {a["download"] for a in page.links} == {f"{c}.cif" for c in final}
    for a in page.links:
        prefix = "data:chemical/x-cif;base64,"
        assert a["href"].startswith(prefix)
        cif = base64.b64decode(a["href"][len(prefix) :]).decode()
        s = Structure.from_str(cif, fmt="cif")
        doc = final[a["download"][:-4]]
        assert s.composition.reduced_formula == doc["reduced_formula"]
        assert len(s) == len(doc["final_structure"]["sites"])

    # a real browser renders every chart (non-empty SVG bounding boxes)
    dom = _headless(tmp_path, "--window-size=1280,3000", "--dump-dom", out.as_uri()).stdout
    rendered = _Page(dom).body
    assert "blink" not in _Page(dom).tags
    assert "data-charts-rendered" in rendered, "the load script did not run"
    assert int(rendered["data-charts-rendered"]) == len(written)
    assert json.loads(rendered["data-charts"]) == written
    # every chart row, lone chart and the candidate table spans the page's content width
    # (a 1280-px window; chromium's own layout, read back by the page's load script)
    use = json.loads(rendered["data-width-use"])
    assert len(use) >= 5 and min(use) >= 95, use

    # and the screenshot is not blank
    from PIL import Image

    png = tmp_path / "report.png"
    _headless(tmp_path, f"--screenshot={png}", "--window-size=1280,3000", out.as_uri())
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 3000)
    small = np.asarray(img.resize((320, 750)))
    colours = {tuple(p) for p in small.reshape(-1, 3)}
    assert len(colours) > 50, f"screenshot looks blank ({len(colours)} colours)"
    assert (small.sum(axis=2) < 600).mean() > 0.05  # a good part of the page is not white
