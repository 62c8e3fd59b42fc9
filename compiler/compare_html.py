"""compare.html: the comparison table and an accuracy-vs-latency scatter plot, one file.

The plot is drawn with matplotlib (no pyplot state: a bare `Figure`) and inlined
as SVG, so the page needs nothing beside it. One panel per machine: latency
measured on different machines shares no axis. Each point is labelled with its
run; the Pareto front (higher accuracy, lower latency) is ringed and joined.
"""

from __future__ import annotations

import html
import io
import re
from typing import TYPE_CHECKING

from compiler.compare import COLUMNS, Comparison, Row, table_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _panel(ax: Axes, rows: list[Row], machine: str) -> None:
    """One machine's runs on `ax`."""
    for metric in dict.fromkeys(r.metric for r in rows):
        group = [r for r in rows if r.metric == metric]
        xs = [float(r.p50_ms or 0) for r in group]
        ys = [float(r.accuracy or 0) for r in group]
        ax.scatter(xs, ys, s=36, color="#4c78a8", zorder=2, label=f"run ({metric})")
        front = sorted((x, y) for x, y, r in zip(xs, ys, group, strict=True) if r.pareto)
        if front:
            ax.plot(
                [p[0] for p in front],
                [p[1] for p in front],
                color="#e45756",
                linewidth=1.2,
                drawstyle="steps-post",
                zorder=1,
            )
            ax.scatter(
                [p[0] for p in front],
                [p[1] for p in front],
                s=110,
                facecolors="none",
                edgecolors="#e45756",
                linewidths=1.5,
                zorder=3,
                label="Pareto front",
            )
        for i, (x, y, r) in enumerate(zip(xs, ys, group, strict=True)):
            # staggered, so that labels of neighbouring points do not print over each other
            offset = (5, 4 - 10 * (i % 3))
            ax.annotate(r.run, (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_title(machine, fontsize=9)
    ax.set_xlabel("p50 latency (ms)")
    ax.set_ylabel(" / ".join(str(m) for m in dict.fromkeys(r.metric for r in rows)))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def scatter_svg(comparison: Comparison) -> str:
    """Accuracy (y) against p50 latency (x), one panel per machine, as an inline <svg>."""
    from matplotlib.figure import Figure

    measured = [r for r in comparison.rows if r.p50_ms is not None and r.accuracy is not None]
    if not measured:
        return "<p>no run has both a latency and an accuracy to plot</p>"
    machines = list(dict.fromkeys(r.machine for r in measured))
    fig = Figure(figsize=(7.5, 4.5 * len(machines)))
    axes = fig.subplots(len(machines), 1, squeeze=False)
    for ax, machine in zip(axes[:, 0], machines, strict=True):
        _panel(ax, [r for r in measured if r.machine == machine], machine)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    # inline: drop the XML declaration and DOCTYPE, keep the <svg> element
    return re.sub(r"^.*?(?=<svg)", "", svg, flags=re.DOTALL)


def to_html(comparison: Comparison) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(comparison)
    )
    notes = "".join(f"<p><strong>Note:</strong> {esc(n)}</p>" for n in comparison.notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgec compare</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body>
<h1>edgec compare</h1>
{notes}
<table><tr>{head}</tr>{body}</table>
<p>p50 / fp32: the artifact's median latency over its FP32 baseline's, paired in the same
run (&lt; 1 is faster). ★: on the accuracy-latency Pareto front of its machine.</p>
<h2>Accuracy vs latency</h2>
{scatter_svg(comparison)}
</body></html>
"""
