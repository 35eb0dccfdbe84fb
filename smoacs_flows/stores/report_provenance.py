"""The report's provenance block and proposal loss curves: what a campaign ran with, so the
report can be cited — the campaign YAML, the code version (git revision), the predictors
with their weights' sha256, the DFT settings and the hull the E_hull figures use."""

from __future__ import annotations

import html
import json
from typing import Any

from smoacs_flows.stores.report_charts import Charts


def _esc(v: Any) -> str:
    return "" if v is None else html.escape(str(v), quote=True)


def _code(code: dict[str, Any] | None) -> str:
    """``smoacs-flows 0.1.0, git abc123 (uncommitted changes)`` or a note."""
    if not code:
        return "not recorded (a campaign run before provenance was kept)"
    git = code.get("git") or {}
    rev = f", git {git['commit']}" if git.get("commit") else ", no git checkout"
    return f"smoacs-flows {code.get('smoacs_flows')}{rev}" + (
        " (with uncommitted changes)" if git.get("dirty") else ""
    )


def _predictors(rows: list[dict[str, Any]] | None) -> str:
    """One line per predictor: name, type, model, each weight file with its sha256."""
    if not rows:
        return "not recorded"
    items = []
    for r in rows:
        files = "".join(
            f"<li><code>{_esc(w.get('file'))}</code> sha256 "
            f'<code class="sha">{_esc(w.get("sha256"))}</code></li>'
            for w in r.get("weights") or []
        )
        err = f" ({_esc(r['error'])})" if r.get("error") else ""
        model = f", model {_esc(r.get('model'))}" if r.get("model") else ", default weights"
        items.append(
            f"<li><b>{_esc(r.get('name'))}</b>: {_esc(r.get('type'))}{model}{err}"
            f"<ul>{files}</ul></li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def provenance_section(prov: dict[str, Any] | None, hulls: list[str]) -> list[str]:
    """The provenance block (``<section id="provenance">``)."""
    prov = prov or {}
    dft = prov.get("dft_settings")
    rows = [
        ("code", _esc(_code(prov.get("code")))),
        ("predictors", _predictors(prov.get("predictors"))),
        (
            "DFT settings",
            f"<pre>{_esc(json.dumps(dft, indent=1, sort_keys=True))}</pre>"
            if dft
            else "not recorded",
        ),
        ("hull (E<sub>hull</sub> against)", "<br>".join(_esc(h) for h in hulls) or "none"),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    yaml_text = prov.get("campaign_yaml")
    yaml_block = (
        f'<details><summary>campaign YAML</summary><pre class="yaml">{_esc(yaml_text)}</pre>'
        "</details>"
        if yaml_text
        else '<p class="note">The campaign YAML was not found on the LaunchPad.</p>'
    )
    return [
        '<section id="provenance"><h2>Provenance</h2>',
        f'<table class="prov">{body}</table>{yaml_block}</section>',
    ]


def loss_chart(ch: Charts, curves: dict[str, list[list[float]]]) -> str | None:
    """The proposal loss curves: per optimiser batch, the batch-mean total loss per step
    (solid) and its minimum (dotted); None without curves."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = ch.figure(7.5, 3.4)
    ax = fig.add_subplot()
    many = len(curves) > 8
    for i, (label, hist) in enumerate(sorted(curves.items())):
        steps = range(len(hist))
        colour = f"C{i % 10}"
        lab = None if many else label
        ax.plot(steps, [h[0] for h in hist], color=colour, lw=1.2, label=lab)
        ax.plot(steps, [h[1] for h in hist], color=colour, lw=0.8, ls=":")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("total loss")
    ax.set_title(
        f"Proposal loss: {len(curves)} batch(es), mean (solid) and minimum (dotted)",
        fontsize=10,
    )
    if not many:
        ax.legend(fontsize=7, ncols=2)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    return ch.block(fig, "loss_curves")


def loss_section(ch: Charts, curves: dict[str, list[list[float]]] | None) -> list[str]:
    """The loss-curve chart under its heading, or a note that none were recorded."""
    block = loss_chart(ch, curves or {})
    if block is None:
        return [
            "<h2>Proposal loss</h2>",
            '<p class="note">No loss history recorded for this campaign version.</p>',
        ]
    return ["<h2>Proposal loss</h2>", block]
