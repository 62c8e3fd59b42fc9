"""report.html's plots: matplotlib figures written as inline SVG text.

Each function returns the `<svg>` element as a string, ready to paste into the
page, so the report stays one self-contained file. Figures are built on
`matplotlib.figure.Figure` with the SVG canvas directly (no pyplot, no global
backend), inside an `rc_context` that fixes the SVG id salt and drops the date,
so the same report gives the same bytes. matplotlib is imported here only, and
this module only when an html report is asked for.

The latency plot's p50/p99 markers are computed by `LatencyStats` — the same
code (and rounding) as the report's `latency_ms` table — so the marker and the
table never disagree. One slow call must not squash the plot into one bar: the
axis ends at the larger of the two distributions' upper fences (Q3 + 3·IQR),
and the samples beyond it are counted, not drawn.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from targets.latency import LatencyStats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the artifact, the FP32 baseline; quantized layers, layers kept in float
ARTIFACT_COLOR = "#1f77b4"
BASELINE_COLOR = "#7f7f7f"
QUANT_COLOR = "#1f77b4"
FLOAT_COLOR = "#d62728"

_RC: dict[str, Any] = {
    "svg.hashsalt": "edgec",
    "svg.fonttype": "none",  # real <text>: small, searchable, selectable
    "font.size": 10.0,
    "font.family": "DejaVu Sans",
}


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]  # stubs type rc values narrower than rcParams takes
        yield


def _svg(fig: Figure) -> str:
    """The figure as an `<svg>` element (no XML prolog, no doctype, no date)."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return text[text.index("<svg") :].strip()


def percentile_marks(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean exactly as report.json's `latency_ms` writes them (same code, same
    rounding)."""
    d = LatencyStats.from_samples(tuple(samples_ms), batch=1, threads=None, warmup=0).to_dict()
    return {"p50": d["p50"], "p90": d["p90"], "p99": d["p99"], "mean": d["mean"]}


def upper_fence(samples_ms: Sequence[float]) -> float:
    """Q3 + 3·IQR: beyond it a sample is an outlier that the axis need not reach."""
    q1, q3 = np.percentile(samples_ms, [25, 75])
    return float(q3 + 3 * (q3 - q1))


@dataclass(frozen=True)
class LatencyPlot:
    svg: str
    #: per series label: {"p50": ..., "p99": ...} as drawn
    marks: dict[str, dict[str, float]]
    #: where the x axis ends (ms) and how many samples lie beyond it
    x_max_ms: float
    hidden: int


def latency_plot(series: Mapping[str, Sequence[float]]) -> LatencyPlot:
    """Step histograms of each series' per-call latency on one axis, with p50/p99 lines.

    `series` maps a label ("int8 artifact", "fp32 baseline") to its samples in ms;
    the first one is the artifact and is drawn in front.
    """
    from matplotlib.figure import Figure

    data = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    if not data:
        raise ValueError("no latency samples")
    marks = {k: percentile_marks(v.tolist()) for k, v in data.items()}
    lo = min(float(v.min()) for v in data.values())
    top = max(float(v.max()) for v in data.values())
    # the axis reaches every distribution's fence and its p99 marker unless that
    # marker itself is an outlier (then it is drawn as an arrow at the edge)
    fence = max(upper_fence(v.tolist()) for v in data.values())
    reach = [m["p99"] for m in marks.values() if m["p99"] <= 2 * fence]
    x_max = min(top, max([fence, *reach]))
    if x_max <= lo:
        x_max = lo + max(abs(lo) * 0.05, 1e-6)
    hidden = int(sum(int((v > x_max).sum()) for v in data.values()))
    bins = np.linspace(lo, x_max, 50).tolist()
    colors = [ARTIFACT_COLOR, BASELINE_COLOR, "#ff7f0e", "#2ca02c"]
    with _style():
        fig = Figure(figsize=(9.0, 3.8))
        ax = fig.add_subplot()
        ymax = 1.0
        for i, (label, v) in enumerate(data.items()):
            c = colors[i % len(colors)]
            shown = v[v <= x_max]
            z = 3 - i / 10  # the artifact in front
            counts, _, _ = ax.hist(
                shown, bins=bins, histtype="stepfilled", alpha=0.25, color=c, zorder=z
            )
            ax.hist(
                shown, bins=bins, histtype="step", color=c, linewidth=1.2, label=label, zorder=z
            )
            ymax = max(ymax, float(np.max(counts)))
        for i, (label, m) in enumerate(marks.items()):
            c = colors[i % len(colors)]
            for q, style in (("p50", "-"), ("p99", "--")):
                x = m[q]
                text = f"{label} {q} {x:.4g} ms"
                if x <= x_max:
                    ax.axvline(x, color=c, linestyle=style, linewidth=1.4, label=text, zorder=5)
                else:  # an outlier p99: an arrow at the right edge, its value in the legend
                    ax.annotate(
                        "",
                        xy=(1.0, 0.9 - 0.1 * i),
                        xycoords="axes fraction",
                        xytext=(0.93, 0.9 - 0.1 * i),
                        arrowprops={"arrowstyle": "->", "color": c, "linestyle": style},
                    )
                    ax.plot([], [], color=c, linestyle=style, label=f"{text} (off axis →)")
        ax.set_ylim(0, ymax * 1.08)
        ax.set_xlim(lo - (x_max - lo) * 0.02, x_max + (x_max - lo) * 0.02)
        ax.set_xlabel("latency per call (ms)")
        ax.set_ylabel("calls")
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        svg = _svg(fig)
    return LatencyPlot(svg, marks, x_max, hidden)


def layer_bars(
    rows: Sequence[tuple[str, Mapping[str, float | None]]],
    kept_float: Sequence[str],
    panels: Sequence[tuple[str, str]],
) -> str:
    """Horizontal bars, one row per layer (all of them), one panel per (key, axis label).

    Layers in `kept_float` are drawn in red (bar and name) and the legend says so;
    a layer with no value for a key (kept in float before it was measured) gets a
    red "not measured" note instead of a bar.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [n for n, _ in rows]
    kept = set(kept_float)
    colors = [FLOAT_COLOR if n in kept else QUANT_COLOR for n in names]
    with _style():
        fig = Figure(
            figsize=(4.5 + 3.4 * len(panels), 1.0 + 0.26 * len(rows)), layout="constrained"
        )
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        y = np.arange(len(rows))
        for ax, (key, label) in zip(axes, panels, strict=True):
            vals = [v.get(key) for _, v in rows]
            widths = [0.0 if v is None else float(v) for v in vals]
            ax.barh(y, widths, color=colors, height=0.7)
            for yi, v, c in zip(y, vals, colors, strict=True):
                text = "kept in float, not measured" if v is None else f"{v:.3g}"
                ax.annotate(
                    text,
                    (0.0 if v is None else float(v), yi),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                    color=c if v is None else "#333333",
                )
            ax.set_xlabel(label)
            ax.grid(True, axis="x", alpha=0.3)
            ax.margins(x=0.18)
        axes[0].set_yticks(y, [n if len(n) <= 48 else "…" + n[-47:] for n in names], fontsize=8)
        for tick, c in zip(axes[0].get_yticklabels(), colors, strict=True):
            tick.set_color(c if c == FLOAT_COLOR else "#222222")
        axes[0].invert_yaxis()
        drawn = sorted(set(colors), key=[QUANT_COLOR, FLOAT_COLOR].index)
        legend = {QUANT_COLOR: "quantized (INT8)", FLOAT_COLOR: "kept in float"}
        fig.legend(
            handles=[Patch(color=c, label=legend[c]) for c in drawn],
            loc="outside upper center",
            ncols=2,
            frameon=False,
        )
        return _svg(fig)


def size_bars(before: Mapping[str, int], after: Mapping[str, int], after_label: str) -> str:
    """Weight bytes per consuming op type, FP32 baseline vs the artifact, in kB."""
    from matplotlib.figure import Figure

    ops = sorted(set(before) | set(after), key=lambda o: -max(before.get(o, 0), after.get(o, 0)))
    y = np.arange(len(ops))
    with _style():
        fig = Figure(figsize=(8.0, 0.9 + 0.32 * len(ops)), layout="constrained")
        ax = fig.add_subplot()
        b = [before.get(o, 0) / 1e3 for o in ops]
        a = [after.get(o, 0) / 1e3 for o in ops]
        ax.barh(y - 0.2, b, height=0.4, color=BASELINE_COLOR, label="fp32 baseline")
        ax.barh(y + 0.2, a, height=0.4, color=ARTIFACT_COLOR, label=after_label)
        ax.set_yticks(y, ops)
        ax.invert_yaxis()
        ax.set_xlabel("weights (kB)")
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(loc="lower right", frameon=False)
        return _svg(fig)
