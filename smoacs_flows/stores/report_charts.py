"""The campaign report's charts: matplotlib figures (Agg, no pyplot) as inline SVG blocks.

Each chart is a ``<figure class="chart" data-chart="NAME">`` holding one SVG; :class:`Charts`
counts what it wrote so the page can check how many the browser rendered.
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

from smoacs_flows.stores.report_docs import num

#: DOS energy window around E_F (eV)
DOS_WINDOW = (-4.0, 4.0)

_F_BLOCK = {57: 8, 89: 9}  # first Z of the lanthanide / actinide rows -> display row


class Charts:
    """Renders matplotlib figures to inline SVG chart blocks and counts them."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def figure(self, w: float, h: float) -> Any:
        """A new ``w`` x ``h`` inch matplotlib figure."""
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
        attr = html.escape(name, quote=True)
        return f'<figure class="chart" data-chart="{attr}">{svg}{cap}</figure>'


def funnel_chart(ch: Charts, funnel: list[tuple[str, int]]) -> str:
    """The screening funnel (paper Figure 6) as horizontal bars with counts and percentages."""
    fig = ch.figure(12.0, 0.38 * len(funnel) + 0.9)  # wide: it spans the page
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


def ptable_chart(
    ch: Charts,
    name: str,
    freq: dict[str, float],
    vmax: float,
    title: str,
    excluded: set[str],
    outline: set[str] = frozenset(),
) -> str:
    """A periodic table coloured by ``freq`` (0..``vmax``; paper Figure 4); ``excluded``
    elements hatched, ``outline`` ones drawn with a dashed border."""
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


def hist_chart(
    ch: Charts,
    name: str,
    series: list[tuple[str, list[float], str]],
    xlabel: str,
    title: str,
    integer: bool = False,
) -> str:
    """A stacked histogram of ``series`` (label, values, colour); unit bins if ``integer``."""
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


def dos_chart(ch: Charts, cid: str, label: str, dos: dict[str, Any]) -> str | None:
    """The spin-resolved DOS of one candidate in :data:`DOS_WINDOW` around E_F (down
    mirrored), or None when the arrays are missing or too short."""
    e = np.asarray([num(x) for x in dos.get("energies") or []], float)
    up_raw = dos.get("up")
    if e.size < 2 or not isinstance(up_raw, list | tuple) or len(up_raw) != e.size:
        return None
    up = np.nan_to_num(np.asarray([num(x) for x in up_raw], float))
    down_raw = dos.get("down")
    down = (
        np.nan_to_num(np.asarray([num(x) for x in down_raw], float))
        if isinstance(down_raw, list | tuple) and len(down_raw) == e.size
        else None
    )
    e = e - (num(dos.get("efermi")) or 0.0)
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
