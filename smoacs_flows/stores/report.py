"""A self-contained HTML report of one campaign version (no network, no external files).

:func:`write_report` turns the candidate documents of :mod:`smoacs_flows.stores.candidates`
into one HTML page with the paper's figures as inline SVG charts (matplotlib, Agg):

- the screening funnel (Figure 6), see :func:`funnel_counts`;
- element-frequency periodic tables (Figure 4), optionally side by side with a second set of
  documents (e.g. the same campaign without exclusion masks);
- the number of elements per candidate (Figure 5);
- distributions of the predicted band gap, the MLIP energy and the DFT moment per formula unit;
- a table of the final candidates (stage ``sun`` or ``dft``), each id linking to its CIF
  (a ``data:`` URI, so the page stays one file);
- a spin-resolved DOS plot per DFT'd candidate (half-metals first);
- the proposal loss curves and a provenance block (campaign YAML, code version, predictors
  with their weights' sha256, DFT settings, hull), see :mod:`.report_provenance`.

Every chart sits in ``<figure class="chart" data-chart="NAME">``; a small inline script writes
the number of charts the browser actually rendered (non-empty SVG bounding box) into
``<body data-charts-rendered>`` and their names (a JSON list) into ``<body data-charts>``;
``<body data-charts-expected>`` holds the number of charts written.

The document fields are read in :mod:`smoacs_flows.stores.report_docs` and the charts drawn in
:mod:`smoacs_flows.stores.report_charts`; their public names are re-exported here.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smoacs_flows.io import atomic_write_bytes
from smoacs_flows.stores.report_charts import (
    DOS_WINDOW,
    Charts,
    dos_chart,
    funnel_chart,
    hist_chart,
    ptable_chart,
)
from smoacs_flows.stores.report_docs import (
    FUNNEL_STEPS,
    as_dict,
    cif_text,
    e_hull,
    element_frequency,
    formula,
    funnel_counts,
    is_half_metal,
    nelements,
    num,
    predicted_gap,
    sun_step_label,
)
from smoacs_flows.stores.report_provenance import loss_section, provenance_section

__all__ = [
    "DOS_WINDOW",
    "FUNNEL_STEPS",
    "MAX_DOS_PLOTS",
    "cif_text",
    "element_frequency",
    "funnel_counts",
    "predicted_gap",
    "write_report",
]

#: at most this many DOS plots (half-metals with the largest half-metallic gap first, then
#: the other DFT'd candidates)
MAX_DOS_PLOTS = 100


def _esc(v: Any) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return "" if v is None else html.escape(str(v), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 color:#1d2430;background:#fff}
header{background:#1f3b63;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px} header p{margin:0;opacity:.85;font-size:13px}
main{padding:8px 28px 40px}
h2{font-size:17px;border-bottom:1px solid #dde3ea;padding-bottom:4px;margin-top:28px}
.stats{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}
.stat{background:#f3f6fa;border-radius:6px;padding:8px 14px;min-width:90px}
.stat b{display:block;font-size:20px} .stat span{font-size:12px;color:#56606e}
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:12px;
 align-items:start}
figure.chart{margin:0;padding:6px;border:1px solid #e6eaf0;border-radius:6px;background:#fff;
 min-width:0}
figure.chart svg{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#56606e;padding:2px 4px}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 10px;text-align:left}
th{background:#f3f6fa;position:sticky;top:0} tr:nth-child(even) td{background:#fafbfc}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.hm{color:#b3261e;font-weight:600} .note{font-size:13px;color:#56606e}
.scroll{max-height:640px;overflow:auto;border:1px solid #e6eaf0} .scroll table{width:100%}
table.prov th{position:static;vertical-align:top;white-space:nowrap}
table.prov ul{margin:0;padding-left:18px} code.sha{font-size:11px;word-break:break-all}
pre{font-size:12px;background:#f7f9fb;padding:6px 10px;overflow:auto;max-height:420px}
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var names = [];
  document.querySelectorAll(".chart").forEach(function (c) {
    var s = c.querySelector("svg"), b = null;
    try { b = s && s.getBBox(); } catch (e) { b = null; }
    if (b && b.width > 0 && b.height > 0) names.push(c.dataset.chart);
  });
  document.body.dataset.chartsRendered = String(names.length);
  document.body.dataset.charts = JSON.stringify(names);
  // how much of the page width each chart row (or lone chart) and the table use, in %
  var main = document.querySelector("main"), st = getComputedStyle(main);
  var inner = main.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
  var use = [];
  document.querySelectorAll("main > figure.chart, main > .row, main > .scroll").forEach(
    function (el) {
      var kids = el.matches(".row") ? el.querySelectorAll("figure.chart") : [el];
      var lo = Infinity, hi = -Infinity;
      kids.forEach(function (k) {
        var r = k.getBoundingClientRect(); lo = Math.min(lo, r.left); hi = Math.max(hi, r.right);
      });
      if (hi > lo) use.push(Math.round(100 * (hi - lo) / inner));
    });
  document.body.dataset.widthUse = JSON.stringify(use);
});
"""


def _fmt(v: Any, spec: str, unit: str = "") -> str:
    f = num(v)
    return "–" if f is None else f"{f:{spec}}{unit}"


def _table(final: list[dict[str, Any]]) -> str:
    rows = []
    for d in final:
        dft = as_dict(d.get("dft"))
        cid = str(d.get("candidate_id") or "")
        cif = cif_text(d)
        if cif is not None:
            uri = "data:chemical/x-cif;base64," + base64.b64encode(cif.encode()).decode()
            link = (
                f'<a class="cif" href="{uri}" download="{_esc(cid)}.cif" '
                f'title="download the CIF">{_esc(cid)}</a>'
            )
        else:
            link = _esc(cid)
        verdict = dft.get("verdict")
        p = dft.get("polarisation")
        rel = as_dict(d.get("relax"))
        sg = " → ".join(
            str(as_dict(rel.get(k)).get("symbol") or "?")
            for k in ("spacegroup_initial", "spacegroup_relaxed")
        )
        kept = {True: "", False: " (changed)", None: ""}.get(rel.get("prototype_kept"), "")
        rows.append(
            f"<tr><td>{link}</td><td>{_esc(formula(d))}</td>"
            f"<td>{_esc(sg if rel else '–')}{_esc(kept)}</td>"
            f'<td class="n">{_fmt(e_hull(d), ".3f")}</td>'
            f'<td class="{"hm" if verdict == "half_metal" else ""}">{_esc(verdict) or "–"}</td>'
            f'<td class="n">{_fmt(p, ".2f")}</td>'
            f'<td class="n">{_fmt(dft.get("moment_per_fu"), ".2f")}</td>'
            f'<td class="n">{_fmt(rel.get("chgnet_moment_per_fu"), ".2f")}</td>'
            f"<td>{_esc(d.get('state'))}</td></tr>"
        )
    head = (
        "<tr><th>candidate (CIF)</th><th>formula</th><th>space group (proposed → relaxed)</th>"
        "<th>E<sub>hull</sub> (eV/atom)</th>"
        "<th>DFT verdict</th><th>P at E<sub>F</sub></th><th>DFT moment (μB/f.u.)</th>"
        "<th>CHGNet Σ|m<sub>i</sub>| (μB/f.u.)</th>"
        "<th>state</th></tr>"
    )
    return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _final_key(d: dict[str, Any]) -> tuple[Any, ...]:
    e = e_hull(d)
    return (
        not is_half_metal(d),
        d.get("dft") is None,
        e is None,
        e or 0.0,
        str(d.get("candidate_id")),
    )


def _hull_note(docs: list[dict]) -> list[str]:
    """The hull (reference set) behind every E_hull and S.U.N. figure, named."""
    hulls = sorted({d["hull"] for d in docs if isinstance(d.get("hull"), str)})
    if not hulls:
        return [
            '<p class="note">Stability and novelty were not evaluated (no reference phases).</p>'
        ]
    return [f'<p class="note">E<sub>hull</sub> against: {_esc(h)}</p>' for h in hulls]


def _stats_block(docs: list[dict], final: list[dict], halfm: list[dict]) -> str:
    """The row of headline counts: candidates, finals, half-metals, then per state."""
    states = Counter(str(d.get("state")) for d in docs if d.get("state"))
    stats = [
        ("candidates", len(docs)),
        (f"final ({sun_step_label(docs)}/DFT)", len(final)),
        ("half-metals", len(halfm)),
    ] + [(k, v) for k, v in sorted(states.items())]
    return (
        '<div class="stats">'
        + "".join(f'<div class="stat"><b>{v:,}</b><span>{_esc(k)}</span></div>' for k, v in stats)
        + "</div>"
    )


def _element_section(
    ch: Charts,
    docs: list[dict],
    title: str,
    excl: set[str],
    compare_docs: list[dict] | None,
    compare_label: str | None,
) -> list[str]:
    """Figure 4: element-frequency periodic table(s) with a note on the exclusions."""
    freq = element_frequency(docs)
    cmp_docs = [d for d in compare_docs or [] if isinstance(d, dict)]
    cfreq = element_frequency(cmp_docs) if compare_docs is not None else {}
    vmax = max([*freq.values(), *cfreq.values(), 1e-9])
    main_label = title if compare_docs is None else "this campaign"
    tables = [
        ptable_chart(
            ch, "periodic_table", freq, vmax, f"{main_label} ({len(docs):,} proposals)", excl
        )
    ]
    if compare_docs is not None:
        tables.append(
            ptable_chart(
                ch,
                "periodic_table_compare",
                cfreq,
                vmax,
                f"{compare_label or 'comparison'} ({len(cmp_docs):,} proposals)",
                set(),
                excl,
            )
        )
    note = "Numbers: % of proposals containing the element."
    if excl:
        note += (
            " Hatched: excluded by the campaign ("
            + _esc(", ".join(sorted(excl)))
            + ")"
            + ("; dashed outline on the comparison." if compare_docs is not None else ".")
        )
    return [
        "<h2>Element frequency</h2>",
        '<div class="row pair">' + "".join(tables) + "</div>",
        f'<p class="note">{note}</p>',
    ]


def _distribution_section(ch: Charts, docs: list[dict]) -> list[str]:
    """Figure 5 and the property histograms; a note names those without data."""
    mom_hm, mom_other = [], []
    for d in docs:
        m = num(as_dict(d.get("dft")).get("moment_per_fu"))
        if m is not None:
            (mom_hm if is_half_metal(d) else mom_other).append(m)
    ens = (num(as_dict(d.get("relax")).get("energy_per_atom")) for d in docs)
    # (chart name, missing-data label, series, x label, title, integer bins)
    specs: list[tuple[str, str, list[tuple[str, list, str]], str, str, bool]] = [
        (
            "nelements",
            "number of elements",
            [("all", [n for n in map(nelements, docs) if n is not None], "#3b7dd8")],
            "number of elements",
            "Elements per candidate",
            True,
        ),
        (
            "band_gap",
            "predicted band gap",
            [("proposals", [g for g in map(predicted_gap, docs) if g is not None], "#6a51a3")],
            "predicted band gap (eV)",
            "Predicted band gap",
            False,
        ),
        (
            "mlip_energy",
            "MLIP energy",
            [("relaxed", [e for e in ens if e is not None], "#2a9d8f")],
            "MLIP energy (eV/atom)",
            "MLIP energy after relaxation",
            False,
        ),
        (
            "dft_moment",
            "DFT moment",
            [("half-metal", mom_hm, "#b3261e"), ("other", mom_other, "#999")],
            "moment (μB per formula unit)",
            "DFT magnetic moment",
            False,
        ),
    ]
    charts, missing = [], []
    for name, what, series, xlabel, chart_title, integer in specs:
        if any(vals for _, vals, _ in series):
            charts.append(hist_chart(ch, name, series, xlabel, chart_title, integer))
        elif name != "band_gap":  # a gap is predicted at proposal time or never: say nothing
            missing.append(what)
    parts = ["<h2>Distributions</h2>", '<div class="row">' + "".join(charts) + "</div>"]
    if missing:
        parts.append(f'<p class="note">No data yet for: {_esc(", ".join(missing))}.</p>')
    return parts


def _final_section(final: list[dict]) -> list[str]:
    """The table of final candidates, or a note that there are none yet."""
    parts = [f"<h2>Final candidates ({len(final):,})</h2>"]
    if final:
        parts.append(
            '<p class="note">Half-metals first, then by E<sub>hull</sub>; '
            "click an id to download its final structure as CIF.</p>"
        )
        parts.append(_table(final))
    else:
        parts.append('<p class="note">No candidate has passed screening yet.</p>')
    return parts


def _dos_section(ch: Charts, docs: list[dict], n_half: int, dos: dict[str, dict]) -> list[str]:
    """One DOS chart per DFT'd candidate: half-metals first (largest half-metallic gap
    first), at most :data:`MAX_DOS_PLOTS`; a note names the half-metals without a plot."""
    dfts = [d for d in docs if as_dict(d.get("dft")).get("verdict")]
    parts = [f"<h2>Spin-resolved DOS ({n_half:,} half-metals, {len(dfts):,} DFT'd)</h2>"]
    dfts.sort(
        key=lambda d: (
            not is_half_metal(d),
            -(num(as_dict(d.get("dft")).get("half_metallic_gap")) or 0.0),
            str(d.get("candidate_id")),
        )
    )
    dos_charts, no_dos = [], []
    for d in dfts:
        cid = str(d.get("candidate_id") or "")
        block = None
        if len(dos_charts) < MAX_DOS_PLOTS and isinstance(dos.get(cid), dict):
            dft = as_dict(d.get("dft"))
            gap = num(dft.get("half_metallic_gap"))
            mom = num(dft.get("moment_per_fu"))
            label = f"{formula(d)} ({cid}): {dft.get('verdict')}"
            label += f", {mom:.2f} μB/f.u." if mom is not None else ""
            label += f", HM gap {gap:.2f} eV" if gap else ""
            block = dos_chart(ch, cid, label, dos[cid])
        if block is None:
            if is_half_metal(d):
                no_dos.append(cid)
        else:
            dos_charts.append(block)
    parts.append('<div class="row">' + "".join(dos_charts) + "</div>")
    if no_dos:
        parts.append(f'<p class="note">No DOS plotted for: {_esc(", ".join(no_dos))}.</p>')
    if not n_half:
        parts.append('<p class="note">No half-metal found by DFT yet.</p>')
    return parts


def write_report(
    docs: list[dict],
    out: str | Path,
    title: str,
    dos: dict[str, dict] | None = None,
    excluded: list[str] | None = None,
    compare_docs: list[dict] | None = None,
    compare_label: str | None = None,
    funnel: list[tuple[str, int]] | None = None,
    provenance: dict[str, Any] | None = None,
    loss_curves: dict[str, list[list[float]]] | None = None,
) -> Path:
    """Write the HTML report of one campaign version to ``out`` (atomically); returns ``out``.

    ``docs``: the candidate documents (missing fields tolerated). ``dos``:
    ``{candidate_id: {"energies", "up", "down" (or None), "efermi"}}`` (absolute energies) for
    the DOS plots of half-metals. ``excluded``: element symbols masked out by the campaign
    (hatched). ``compare_docs`` / ``compare_label``: a second set whose periodic table is drawn
    beside the first (same colour scale). ``funnel``: ``[(label, count)]`` instead of
    :func:`funnel_counts` of ``docs``. ``provenance``: ``{"campaign_yaml", "code",
    "predictors", "dft_settings"}`` (see :mod:`.report_data`); ``loss_curves``:
    ``{batch label: [[mean, min] per step]}``.
    """
    docs = [d for d in docs or [] if isinstance(d, dict)]
    excl = {e for e in excluded or [] if isinstance(e, str)}
    funnel = list(funnel) if funnel is not None else funnel_counts(docs)
    ch = Charts()
    final = sorted((d for d in docs if d.get("stage") in ("sun", "dft")), key=_final_key)
    halfm = [d for d in docs if is_half_metal(d)]
    parts = [
        _stats_block(docs, final, halfm),
        "<h2>Screening funnel</h2>",  # Figure 6
        funnel_chart(ch, funnel),
        *_hull_note(docs),
        *_element_section(ch, docs, title, excl, compare_docs, compare_label),
        *_distribution_section(ch, docs),
        *_final_section(final),
        *_dos_section(ch, docs, len(halfm), dos or {}),
        *loss_section(ch, loss_curves),
        *provenance_section(
            provenance, sorted({d["hull"] for d in docs if isinstance(d.get("hull"), str)})
        ),
    ]

    camp = {str(d.get("campaign")) for d in docs if d.get("campaign") is not None}
    vers = {str(d.get("version")) for d in docs if d.get("version") is not None}
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sub = (
        f"campaign {', '.join(sorted(camp)) or '?'} · version {', '.join(sorted(vers)) or '?'}"
        f" · generated {now}"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f'<body data-charts-expected="{len(ch.names)}">'
        f"<header><h1>{_esc(title)}</h1><p>{_esc(sub)}</p></header>"
        f"<main>{''.join(parts)}</main>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    out = Path(out)
    atomic_write_bytes(out, page.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o666 & ~umask)  # a page to share, not the temp file's 0600
    return out
