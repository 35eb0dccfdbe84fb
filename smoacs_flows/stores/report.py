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
- a spin-resolved DOS plot per DFT'd candidate (half-metals first).

Every chart sits in ``<figure class="chart" data-chart="NAME">``; a small inline script writes
the number of charts the browser actually rendered (non-empty SVG bounding box) into
``<body data-charts-rendered>`` and their names (a JSON list) into ``<body data-charts>``;
``<body data-charts-expected>`` holds the number of charts written.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from smoacs_flows.io import atomic_write_bytes
from smoacs_flows.stores.candidates import FUNNEL

#: funnel steps of :func:`funnel_counts`: (label, furthest stage needed or None)
FUNNEL_STEPS: list[tuple[str, str | None]] = [
    ("proposed", "proposed"),
    ("prefiltered", "prefiltered"),
    ("relaxed", "relaxed"),
    ("S.U.N.", "sun"),
    ("DFT", "dft"),
    ("half-metal", None),
]
#: at most this many DOS plots (half-metals with the largest half-metallic gap first, then
#: the other DFT'd candidates)
MAX_DOS_PLOTS = 100
#: DOS energy window around E_F (eV)
DOS_WINDOW = (-4.0, 4.0)

_RANK = {s: i for i, s in enumerate(FUNNEL)}
_F_BLOCK = {57: 8, 89: 9}  # first Z of the lanthanide / actinide rows -> display row


# ----------------------------------------------------------------------------- pure helpers


def _esc(v: Any) -> str:
    """HTML-escaped text of any value (None -> empty)."""
    return "" if v is None else html.escape(str(v), quote=True)


def _num(v: Any) -> float | None:
    """``v`` as a finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _stage_rank(doc: dict[str, Any]) -> int:
    return _RANK.get(doc.get("stage"), 0) if isinstance(doc.get("stage"), str) else 0


def _is_half_metal(doc: dict[str, Any]) -> bool:
    return _d(doc.get("dft")).get("verdict") == "half_metal"


def funnel_counts(docs: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
    """The screening funnel of ``docs``: ``[(label, count), ...]`` in the order proposed →
    prefiltered → relaxed → S.U.N. → DFT → half-metal.

    A candidate counts at every step up to the furthest stage it reached (its ``stage``;
    unknown or missing counts as ``proposed``); half-metals are those with
    ``dft.verdict == "half_metal"``.
    """
    counts = dict.fromkeys((label for label, _ in FUNNEL_STEPS), 0)
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        rank = _stage_rank(doc)
        for label, stage in FUNNEL_STEPS:
            if stage is None:
                counts[label] += _is_half_metal(doc)
            elif rank >= _RANK[stage]:
                counts[label] += 1
    return list(counts.items())


def _elements(doc: dict[str, Any]) -> set[str]:
    els = doc.get("elements")
    return {e for e in els if isinstance(e, str)} if isinstance(els, list | tuple) else set()


def element_frequency(docs: list[dict[str, Any]]) -> dict[str, float]:
    """``{element: fraction of docs containing it}``."""
    n = sum(1 for d in docs if isinstance(d, dict))
    c: Counter[str] = Counter()
    for d in docs:
        if isinstance(d, dict):
            c.update(_elements(d))
    return {el: k / n for el, k in c.items()} if n else {}


def _nelements(doc: dict[str, Any]) -> int | None:
    n = doc.get("nelements")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    return len(_elements(doc)) or None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def predicted_gap(doc: dict[str, Any]) -> float | None:
    """The smallest predicted band gap of the SMOACS record (any ``*band_gap`` key)."""
    pred = _flatten(_d(doc.get("smoacs")).get("predicted"))
    vals = [_num(v) for k, v in pred.items() if k.lower().endswith(("band_gap", "bandgap"))]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _formula(doc: dict[str, Any]) -> str:
    return str(
        doc.get("reduced_formula")
        or doc.get("formula")
        or _d(doc.get("dft")).get("reduced_formula")
        or ""
    )


def _e_hull(doc: dict[str, Any]) -> float | None:
    v = _num(doc.get("e_above_hull"))
    return v if v is not None else _num(_d(doc.get("dft")).get("e_above_hull"))


def cif_text(doc: dict[str, Any]) -> str | None:
    """The CIF of the candidate's final structure (proposal as fallback), or None."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    for key in ("final_structure", "structure"):
        sd = doc.get(key)
        if isinstance(sd, dict) and sd.get("sites"):
            try:
                return str(CifWriter(Structure.from_dict(sd)))
            except Exception:  # noqa: BLE001 - a broken structure only loses its link
                continue
    return None


# ----------------------------------------------------------------------------- charts


class _Charts:
    """Renders matplotlib figures to inline SVG chart blocks and counts them."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def figure(self, w: float, h: float) -> Any:
        from matplotlib.figure import Figure

        return Figure(figsize=(w, h), dpi=100)  # no pyplot: Agg/SVG canvas, no global state

    def block(self, fig: Any, name: str, caption: str = "") -> str:
        """``<figure class="chart">`` holding ``fig`` as inline SVG."""
        import matplotlib

        buf = io.StringIO()
        salt = f"c{len(self.names)}"  # distinct clip-path ids per chart in one document
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
            fig.savefig(buf, format="svg", bbox_inches="tight")
        svg = buf.getvalue()
        svg = svg[svg.index("<svg") :]
        self.names.append(name)
        cap = f"<figcaption>{caption}</figcaption>" if caption else ""
        return f'<figure class="chart" data-chart="{_esc(name)}">{svg}{cap}</figure>'


def _funnel_chart(ch: _Charts, funnel: list[tuple[str, int]]) -> str:
    fig = ch.figure(7.5, 0.45 * len(funnel) + 0.9)
    ax = fig.add_subplot()
    labels = [str(lab) for lab, _ in funnel][::-1]
    vals = [max(int(v or 0), 0) for _, v in funnel][::-1]
    top = max(vals) if vals and max(vals) > 0 else 1
    ax.barh(range(len(vals)), vals, color="#3b7dd8", height=0.65)
    for i, v in enumerate(vals):
        ax.text(v + top * 0.01, i, f"{v:,} ({100 * v / top:.3g}%)", va="center", fontsize=9)
    ax.set_yticks(range(len(vals)), [lab.replace("$", r"\$") for lab in labels])
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel("candidates")
    ax.set_title("Screening funnel")
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    return ch.block(fig, "funnel")


def _table_pos(z: int) -> tuple[int, float] | None:
    """(column, row) of element ``z`` in the display grid (f-block below)."""
    from pymatgen.core import Element

    for z0, row in _F_BLOCK.items():
        if z0 <= z < z0 + 15:
            return z - z0 + 3, row + 0.4
    try:
        el = Element.from_Z(z)
    except (ValueError, KeyError):
        return None
    return el.group, el.row


def _ptable_chart(
    ch: _Charts,
    name: str,
    freq: dict[str, float],
    vmax: float,
    title: str,
    excluded: set[str],
    outline: set[str] = frozenset(),
) -> str:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle
    from pymatgen.core import Element

    cmap = colormaps["YlOrRd"]
    norm = Normalize(0.0, max(vmax, 1e-9))
    fig = ch.figure(6.6, 3.9)
    ax = fig.add_subplot()
    for z in range(1, 119):
        pos = _table_pos(z)
        if pos is None:
            continue
        col, row = pos
        sym = Element.from_Z(z).symbol
        f = freq.get(sym, 0.0)
        kw: dict[str, Any] = {"lw": 0.5, "edgecolor": "#999999"}
        if sym in excluded:
            kw.update(facecolor="#d9d9d9", hatch="////", edgecolor="#8c8c8c")
        elif f > 0:
            kw["facecolor"] = cmap(norm(f))
        else:
            kw["facecolor"] = "#f7f7f7"
        if sym in outline:
            kw.update(edgecolor="#1f4e9c", lw=1.6, ls="--")
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 0.95, 0.95, **kw))
        dark = f > 0.6 * vmax and sym not in excluded
        ax.text(
            col - 0.02,
            row - 0.1,
            sym,
            ha="center",
            va="center",
            fontsize=6.5,
            color="white" if dark else ("#777777" if sym in excluded else "black"),
        )
        if f > 0:
            ax.text(
                col - 0.02,
                row + 0.24,
                f"{100 * f:.0f}" if f >= 0.01 else "<1",
                ha="center",
                va="center",
                fontsize=4.5,
                color="white" if dark else "#333333",
            )
    ax.set_xlim(0.4, 18.6)
    ax.set_ylim(9.9, 0.4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title.replace("$", r"\$"), fontsize=9)
    cb = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.6, pad=0.01)
    cb.set_label("% of proposals with the element", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    cb.ax.yaxis.set_major_formatter(lambda x, _: f"{100 * x:.0f}")
    return ch.block(fig, name)


def _hist_chart(
    ch: _Charts,
    name: str,
    series: list[tuple[str, list[float], str]],
    xlabel: str,
    title: str,
    integer: bool = False,
) -> str:
    fig = ch.figure(5.2, 3.3)
    ax = fig.add_subplot()
    allv = np.concatenate([np.asarray(v, float) for _, v, _ in series if v])
    if integer:
        lo, hi = int(allv.min()), int(allv.max())
        bins = np.arange(lo - 0.5, hi + 1.5, 1.0)
        ax.set_xticks(range(lo, hi + 1))
    else:
        lo, hi = float(allv.min()), float(allv.max())
        n = min(40, max(8, int(2 * np.sqrt(allv.size))))
        bins = np.linspace(lo - 0.5, hi + 0.5, 12) if hi - lo < 1e-9 else np.linspace(lo, hi, n + 1)
    data = [np.asarray(v, float) for _, v, _ in series if v]
    labels = [lab for lab, v, _ in series if v]
    colors = [c for _, v, c in series if v]
    ax.hist(data, bins=bins, stacked=True, label=labels, color=colors, edgecolor="white", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("candidates")
    ax.set_title(title, fontsize=10)
    if len(data) > 1:
        ax.legend(fontsize=8)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    return ch.block(fig, name)


def _dos_chart(ch: _Charts, cid: str, label: str, dos: dict[str, Any]) -> str | None:
    e = np.asarray([_num(x) for x in dos.get("energies") or []], float)
    up_raw = dos.get("up")
    if e.size < 2 or not isinstance(up_raw, list | tuple) or len(up_raw) != e.size:
        return None
    up = np.nan_to_num(np.asarray([_num(x) for x in up_raw], float))
    down_raw = dos.get("down")
    down = (
        np.nan_to_num(np.asarray([_num(x) for x in down_raw], float))
        if isinstance(down_raw, list | tuple) and len(down_raw) == e.size
        else None
    )
    e = e - (_num(dos.get("efermi")) or 0.0)
    lo, hi = DOS_WINDOW
    m = (e >= lo - 0.2) & (e <= hi + 0.2)
    if m.sum() < 2:
        return None
    e, up = e[m], up[m]
    down = down[m] if down is not None else None
    fig = ch.figure(5.2, 3.3)
    ax = fig.add_subplot()
    ax.fill_between(e, up, color="tab:red", alpha=0.6, lw=0.6, label="spin up")
    if down is not None:
        ax.fill_between(e, -down, color="tab:blue", alpha=0.6, lw=0.6, label="spin down")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(0.0, color="k", ls="--", lw=0.8, label="E_F")
    top = max(
        float(up.max(initial=0.0)), float(down.max(initial=0.0)) if down is not None else 0.0, 1e-3
    )
    ax.set_ylim(-1.05 * top if down is not None else 0.0, 1.05 * top)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    ax.set_title(label.replace("$", r"\$"), fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    return ch.block(fig, f"dos:{cid}")


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 color:#1d2430;background:#fff}
header{background:#1f3b63;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px} header p{margin:0;opacity:.85;font-size:13px}
main{padding:8px 28px 40px;max-width:1240px}
h2{font-size:17px;border-bottom:1px solid #dde3ea;padding-bottom:4px;margin-top:28px}
.stats{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}
.stat{background:#f3f6fa;border-radius:6px;padding:8px 14px;min-width:90px}
.stat b{display:block;font-size:20px} .stat span{font-size:12px;color:#56606e}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure.chart{margin:0;padding:6px;border:1px solid #e6eaf0;border-radius:6px;background:#fff}
figure.chart svg{max-width:100%;height:auto;display:block}
.pair>figure.chart{flex:1 1 0;min-width:0} .pair svg{width:100%}
figcaption{font-size:12px;color:#56606e;padding:2px 4px}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 10px;text-align:left}
th{background:#f3f6fa;position:sticky;top:0} tr:nth-child(even) td{background:#fafbfc}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.hm{color:#b3261e;font-weight:600} .note{font-size:13px;color:#56606e}
.scroll{max-height:640px;overflow:auto;border:1px solid #e6eaf0}
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
});
"""


def _fmt(v: Any, spec: str, unit: str = "") -> str:
    f = _num(v)
    return "–" if f is None else f"{f:{spec}}{unit}"


def _table(final: list[dict[str, Any]]) -> str:
    rows = []
    for d in final:
        dft = _d(d.get("dft"))
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
        rows.append(
            f"<tr><td>{link}</td><td>{_esc(_formula(d))}</td>"
            f'<td class="n">{_fmt(_e_hull(d), ".3f")}</td>'
            f'<td class="{"hm" if verdict == "half_metal" else ""}">{_esc(verdict) or "–"}</td>'
            f'<td class="n">{_fmt(p, ".2f")}</td>'
            f'<td class="n">{_fmt(dft.get("moment_per_fu"), ".2f")}</td>'
            f"<td>{_esc(d.get('state'))}</td></tr>"
        )
    head = (
        "<tr><th>candidate (CIF)</th><th>formula</th><th>E<sub>hull</sub> (eV/atom)</th>"
        "<th>DFT verdict</th><th>P at E<sub>F</sub></th><th>moment (μB/f.u.)</th>"
        "<th>state</th></tr>"
    )
    return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _final_key(d: dict[str, Any]) -> tuple[Any, ...]:
    e = _e_hull(d)
    return (
        not _is_half_metal(d),
        d.get("dft") is None,
        e is None,
        e or 0.0,
        str(d.get("candidate_id")),
    )


def write_report(
    docs: list[dict],
    out: str | Path,
    title: str,
    dos: dict[str, dict] | None = None,
    excluded: list[str] | None = None,
    compare_docs: list[dict] | None = None,
    compare_label: str | None = None,
    funnel: list[tuple[str, int]] | None = None,
) -> Path:
    """Write the HTML report of one campaign version to ``out`` (atomically); returns ``out``.

    ``docs``: the candidate documents (missing fields tolerated). ``dos``:
    ``{candidate_id: {"energies", "up", "down" (or None), "efermi"}}`` (absolute energies) for
    the DOS plots of half-metals. ``excluded``: element symbols masked out by the campaign
    (hatched). ``compare_docs`` / ``compare_label``: a second set whose periodic table is drawn
    beside the first (same colour scale). ``funnel``: ``[(label, count)]`` instead of
    :func:`funnel_counts` of ``docs``.
    """
    docs = [d for d in docs or [] if isinstance(d, dict)]
    dos = dos or {}
    excl = {e for e in excluded or [] if isinstance(e, str)}
    funnel = list(funnel) if funnel is not None else funnel_counts(docs)
    ch = _Charts()
    parts: list[str] = []

    camp = {str(d.get("campaign")) for d in docs if d.get("campaign") is not None}
    vers = {str(d.get("version")) for d in docs if d.get("version") is not None}
    final = sorted((d for d in docs if d.get("stage") in ("sun", "dft")), key=_final_key)
    halfm = [d for d in docs if _is_half_metal(d)]
    states = Counter(str(d.get("state")) for d in docs if d.get("state"))
    stats = [
        ("candidates", len(docs)),
        ("final (S.U.N./DFT)", len(final)),
        ("half-metals", len(halfm)),
    ] + [(k, v) for k, v in sorted(states.items())]
    parts.append(
        '<div class="stats">'
        + "".join(f'<div class="stat"><b>{v:,}</b><span>{_esc(k)}</span></div>' for k, v in stats)
        + "</div>"
    )

    # Figure 6: funnel
    parts.append("<h2>Screening funnel</h2>")
    parts.append(_funnel_chart(ch, funnel))

    # Figure 4: element frequencies
    parts.append("<h2>Element frequency</h2>")
    freq = element_frequency(docs)
    cmp_docs = [d for d in compare_docs or [] if isinstance(d, dict)]
    cfreq = element_frequency(cmp_docs) if compare_docs is not None else {}
    vmax = max([*freq.values(), *cfreq.values(), 1e-9])
    main_label = title if compare_docs is None else "this campaign"
    tables = [
        _ptable_chart(
            ch, "periodic_table", freq, vmax, f"{main_label} ({len(docs):,} proposals)", excl
        )
    ]
    if compare_docs is not None:
        tables.append(
            _ptable_chart(
                ch,
                "periodic_table_compare",
                cfreq,
                vmax,
                f"{compare_label or 'comparison'} ({len(cmp_docs):,} proposals)",
                set(),
                excl,
            )
        )
    parts.append('<div class="row pair">' + "".join(tables) + "</div>")
    note = "Numbers: % of proposals containing the element."
    if excl:
        note += (
            " Hatched: excluded by the campaign ("
            + _esc(", ".join(sorted(excl)))
            + ")"
            + ("; dashed outline on the comparison." if compare_docs is not None else ".")
        )
    parts.append(f'<p class="note">{note}</p>')

    # Figure 5 and property distributions
    parts.append("<h2>Distributions</h2>")
    charts, missing = [], []
    nel = [n for n in (_nelements(d) for d in docs) if n is not None]
    if nel:
        charts.append(
            _hist_chart(
                ch,
                "nelements",
                [("all", nel, "#3b7dd8")],
                "number of elements",
                "Elements per candidate",
                True,
            )
        )
    else:
        missing.append("number of elements")
    gaps = [g for g in (predicted_gap(d) for d in docs) if g is not None]
    if gaps:
        charts.append(
            _hist_chart(
                ch,
                "band_gap",
                [("proposals", gaps, "#6a51a3")],
                "predicted band gap (eV)",
                "Predicted band gap",
            )
        )
    else:
        missing.append("predicted band gap")
    ens = [
        e for e in (_num(_d(d.get("relax")).get("energy_per_atom")) for d in docs) if e is not None
    ]
    if ens:
        charts.append(
            _hist_chart(
                ch,
                "mlip_energy",
                [("relaxed", ens, "#2a9d8f")],
                "MLIP energy (eV/atom)",
                "MLIP energy after relaxation",
            )
        )
    else:
        missing.append("MLIP energy")
    mom_hm, mom_other = [], []
    for d in docs:
        m = _num(_d(d.get("dft")).get("moment_per_fu"))
        if m is not None:
            (mom_hm if _is_half_metal(d) else mom_other).append(m)
    if mom_hm or mom_other:
        charts.append(
            _hist_chart(
                ch,
                "dft_moment",
                [("half-metal", mom_hm, "#b3261e"), ("other", mom_other, "#999")],
                "moment (μB per formula unit)",
                "DFT magnetic moment",
            )
        )
    else:
        missing.append("DFT moment")
    parts.append('<div class="row">' + "".join(charts) + "</div>")
    if missing:
        parts.append(f'<p class="note">No data yet for: {_esc(", ".join(missing))}.</p>')

    # final candidates
    parts.append(f"<h2>Final candidates ({len(final):,})</h2>")
    if final:
        parts.append(
            '<p class="note">Half-metals first, then by E<sub>hull</sub>; '
            "click an id to download its final structure as CIF.</p>"
        )
        parts.append(_table(final))
    else:
        parts.append('<p class="note">No candidate has passed S.U.N. screening yet.</p>')

    # spin DOS: half-metals first (largest half-metallic gap first), then the other DFT'd
    dfts = [d for d in docs if _d(d.get("dft")).get("verdict")]
    parts.append(f"<h2>Spin-resolved DOS ({len(halfm):,} half-metals, {len(dfts):,} DFT'd)</h2>")
    dfts.sort(
        key=lambda d: (
            not _is_half_metal(d),
            -(_num(_d(d.get("dft")).get("half_metallic_gap")) or 0.0),
            str(d.get("candidate_id")),
        )
    )
    dos_charts, no_dos = [], []
    for d in dfts:
        cid = str(d.get("candidate_id") or "")
        block = None
        if len(dos_charts) < MAX_DOS_PLOTS and isinstance(dos.get(cid), dict):
            dft = _d(d.get("dft"))
            gap = _num(dft.get("half_metallic_gap"))
            mom = _num(dft.get("moment_per_fu"))
            label = f"{_formula(d)} ({cid}): {dft.get('verdict')}"
            label += f", {mom:.2f} μB/f.u." if mom is not None else ""
            label += f", HM gap {gap:.2f} eV" if gap else ""
            block = _dos_chart(ch, cid, label, dos[cid])
        if block is None:
            if _is_half_metal(d):
                no_dos.append(cid)
        else:
            dos_charts.append(block)
    parts.append('<div class="row">' + "".join(dos_charts) + "</div>")
    if no_dos:
        parts.append(f'<p class="note">No DOS plotted for: {_esc(", ".join(no_dos))}.</p>')
    if not halfm:
        parts.append('<p class="note">No half-metal found by DFT yet.</p>')

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
