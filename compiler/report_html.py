"""report.html: one self-contained page a person can decide from.

Top to bottom: the verdict (green pass, red fail, grey when no budget was
set) and the gates; the key figures; latency of the artifact against its FP32
baseline on one axis; accuracy, per output; quantization with per-layer bars
(layers kept in float in red); weight bytes per op type before and after;
`--precision auto`'s candidates; the passes that changed the graph (the others
folded away); versions and the exact command. Plots are matplotlib SVG inlined
as text (`compiler.report_plots`): no scripts, no external files.

Every section has an id (`SECTION_IDS`) so tests and a headless browser can
find it; the latency markers carry `data-p50-ms`/`data-p99-ms` attributes equal
to the table's figures.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.report_text import fmt, overflow_text

log = logging.getLogger(__name__)

#: every section report.html can hold, in page order (absent ones are left out)
SECTION_IDS = (
    "verdict",
    "gates",
    "summary",
    "auto",
    "latency",
    "accuracy",
    "quantization",
    "sizes",
    "passes",
    "versions",
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
 vertical-align:top}th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.25em;font-weight:600;margin:.6em 0}
.verdict-pass{background:#e3f4e6;color:#155d27;border:2px solid #2e9e4b}
.verdict-fail{background:#fbe4e4;color:#8a1414;border:2px solid #d62728}
.verdict-none{background:#eef0f3;color:#333;border:2px solid #9aa3ad}
tr.pass td.status{color:#155d27;font-weight:600}tr.fail td.status{color:#8a1414;font-weight:600}
tr.chosen{background:#eef6ff}tr.kept td{color:#8a1414}.note{color:#555;font-size:.92em}figure{margin:.5em 0}
figure svg{max-width:100%;height:auto}details{margin:.5em 0}summary{cursor:pointer;color:#333}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px;word-break:break-all}
"""


@dataclass(frozen=True)
class HtmlInputs:
    """What report.html draws beyond report.json: samples and the files compared."""

    latency_samples_ms: Sequence[float] = ()
    baseline_samples_ms: Sequence[float] = ()
    #: the FP32 baseline and the artifact as ONNX files (size by op type); None: not drawn
    baseline_onnx: Path | None = None
    artifact_onnx: Path | None = None
    #: the command line that ran, when the CLI recorded it
    command: str | None = None


def _e(v: object) -> str:
    return html.escape(str(v))


def _num(v: Any, digits: int = 4) -> str:
    """report.md's formatting, except that large floats are written in full."""
    if isinstance(v, float) and abs(v) >= 10**digits:  # 13950.4, not 1.395e+04
        return f"{v:,.0f}"
    return fmt(v, digits)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: Sequence[str] = ()) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = []
    for i, row in enumerate(rows):
        c = f' class="{cls[i]}"' if i < len(cls) and cls[i] else ""
        cells = "".join(
            f'<td class="num">{_e(_num(v))}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{_e(_num(v))}</td>"
            for v in row
        )
        body.append(f"<tr{c}>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def verdict_class(report: Mapping[str, Any]) -> str:
    """`verdict-pass`, `verdict-fail`, or `verdict-none` when no budget was set."""
    if not report.get("gates"):
        return "verdict-none"
    return "verdict-pass" if report.get("passed") else "verdict-fail"


def _verdict(report: Mapping[str, Any]) -> str:
    cls = verdict_class(report)
    gates = report.get("gates") or []
    failed = [g for g in gates if not g.get("passed")]
    if cls == "verdict-none":
        text = (
            "No budgets set: nothing judged (give --max-size-mb, --max-latency-ms, --min-accuracy)"
        )
    elif cls == "verdict-pass":
        text = f"PASS: all {len(gates)} budget{'s' if len(gates) != 1 else ''} met"
    else:
        text = f"FAIL: {len(failed)} of {len(gates)} budgets missed ({', '.join(g['name'] for g in failed)})"
    b, lat, acc = (
        report.get("baseline") or {},
        report.get("latency_ms") or {},
        report.get("accuracy") or {},
    )
    a = report.get("artifact") or {}
    facts = [f"{_e(report.get('target'))} / {_e(report.get('precision'))}"]
    if a.get("size_bytes") is not None:
        facts.append(f"{a['size_bytes'] / 1e6:.4g} MB")
        if b.get("size_ratio") is not None:
            facts[-1] += f" (×{b['size_ratio']:.3g} of fp32)"
    if lat.get("p50") is not None:
        facts.append(f"p50 {_num(lat['p50'])} ms")
        if b.get("speedup") is not None:
            facts[-1] += f" (speedup ×{b['speedup']:.3g} vs fp32)"
    if acc.get("top1_agreement") is not None:
        facts.append(f"top-1 agreement {_num(acc['top1_agreement'])}")
    elif acc.get("cosine") is not None:
        facts.append(f"cosine {_num(acc['cosine'], 6)}")
    return (
        f'<div id="verdict" class="verdict {cls}">{_e(text)}</div>\n'
        f'<p class="note">{" · ".join(facts)}</p>'
    )


def _gates(report: Mapping[str, Any]) -> str:
    gates = report.get("gates") or []
    if not gates:
        return _section("gates", "Gates", '<p class="note">No budgets were given.</p>')
    rows = [
        (
            g["name"],
            g.get("limit"),
            g.get("value"),
            "" if g.get("margin_db") is None else g["margin_db"],
            "pass" if g["passed"] else "FAIL",
        )
        for g in gates
    ]
    table = _table(
        ["budget", "limit", "value", "SQNR margin (dB; negative: to gain)", "result"],
        rows,
        ["pass" if g["passed"] else "fail" for g in gates],
    )
    # the result column is the last cell of each row
    table = table.replace("<td>pass</td>", '<td class="status">pass</td>').replace(
        "<td>FAIL</td>", '<td class="status">FAIL</td>'
    )
    return _section("gates", "Gates", table)


def _summary(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return _section("summary", "Summary", f"<table>{body}</table>")


def _latency(report: Mapping[str, Any], inputs: HtmlInputs) -> str:
    lat = report.get("latency_ms") or {}
    b = report.get("baseline") or {}
    label = f"{report.get('precision')} artifact"
    rows: list[Sequence[Any]] = [
        (
            label,
            lat.get("p50"),
            lat.get("p90"),
            lat.get("p99"),
            lat.get("mean"),
            lat.get("iterations"),
        )
    ]
    parts = []
    series = {label: inputs.latency_samples_ms}
    if inputs.baseline_samples_ms:
        series["fp32 baseline"] = inputs.baseline_samples_ms
    if inputs.latency_samples_ms:
        from compiler.report_plots import latency_plot, percentile_marks

        if inputs.baseline_samples_ms:
            m = percentile_marks(inputs.baseline_samples_ms)
            rows.append(
                (
                    "fp32 baseline",
                    m["p50"],
                    m["p90"],
                    m["p99"],
                    m["mean"],
                    len(inputs.baseline_samples_ms),
                )
            )
        plot = latency_plot(series)
        own = plot.marks[label]
        parts.append(
            f'<figure id="latency-plot" data-p50-ms="{own["p50"]}" data-p99-ms="{own["p99"]}" '
            f'data-x-max-ms="{plot.x_max_ms:.6g}" data-hidden="{plot.hidden}">{plot.svg}'
        )
        note = "Per-call latency, same axis; solid lines p50, dashed p99 (as in the table)."
        if plot.hidden:
            note += (
                f' <span class="outliers">{plot.hidden} sample{"s" if plot.hidden != 1 else ""} '
                f"beyond {plot.x_max_ms:.4g} ms not shown.</span>"
            )
        parts.append(f'<figcaption class="note">{note}</figcaption></figure>')
    else:
        parts.append('<p class="note">No latency samples were passed to the report.</p>')
        if b.get("latency_ms") is not None:
            rows.append(("fp32 baseline", b.get("latency_ms"), None, None, None, None))
    table = _table(["", "p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)", "calls"], rows)
    extra = (
        f'<p class="note">batch {_e(lat.get("batch"))}, {_e(lat.get("threads"))} threads, '
        f"{_e(lat.get('warmup'))} warm-up calls; speedup ×{_e(_num(b.get('speedup'), 3))} "
        "(paired per round), "
        f"throughput {_e(_num(lat.get('throughput_per_s')))}/s"
        + (
            f"; torch eager p50 {_e(_num(b.get('torch_latency_ms')))} ms"
            if b.get("torch_latency_ms") is not None
            else ""
        )
        + "</p>"
    )
    return _section("latency", "Latency", table + extra + "\n".join(parts))


_METRICS = (
    ("samples", "samples"),
    ("top1_agreement", "top-1 agreement with fp32"),
    ("top5_agreement", "top-5 agreement with fp32"),
    ("top1_headroom_db", "SQNR drop before one more top-1 flip (dB)"),
    ("top1_flips_cleared_db", "SQNR rise until every top-1 flip agrees (dB)"),
    ("cosine", "cosine (mean)"),
    ("min_cosine", "cosine (worst sample)"),
    ("sqnr_db", "SQNR (dB)"),
    ("max_abs_error", "max |error|"),
    ("top1_accuracy", "label accuracy"),
    ("baseline_top1_accuracy", "label accuracy, fp32 original"),
)


def _accuracy(report: Mapping[str, Any]) -> str:
    acc = report.get("accuracy") or {}
    if not acc:
        return ""
    outputs: Mapping[str, Mapping[str, Any]] = acc.get("outputs") or {}
    names = list(outputs)
    keys = [
        (k, t)
        for k, t in _METRICS
        if acc.get(k) is not None or any(o.get(k) is not None for o in outputs.values())
    ]
    header = [
        "metric",
        f"judged output ({acc.get('output') or '—'})",
        *[f"output {n}" for n in names],
    ]
    rows = [(t, acc.get(k), *[outputs[n].get(k) for n in names]) for k, t in keys]
    src = f'<p class="note">against the FP32 original on {_e(acc.get("source") or "—")}</p>'
    return _section("accuracy", "Accuracy", src + _table(header, rows))


def _fallback_trade(q: Mapping[str, Any]) -> str:
    """--auto-fallback's choice: its latency bound and each candidate's gain and cost."""
    fb, trade = q.get("fallback"), q.get("fallback_trade") or []
    if not isinstance(fb, Mapping) or not trade:
        return ""
    bound = fb.get("latency_bound_ratio")
    note = (
        f"all-INT8 {_e(_num(fb.get('int8_latency_ratio')))}x FP32, bound "
        f"{_e(_num(bound))}x, predicted {_e(_num(fb.get('predicted_latency_ratio')))}x; "
        if bound is not None
        else "no latency bound; "
    ) + ("accuracy budget met" if fb.get("accuracy_met") else "accuracy budget NOT met")
    rows = [
        (t["layer"], t.get("sqnr_db"), t.get("gain"), t.get("latency_cost_ms"), t["kept_float"])
        for t in trade
    ]
    cls = ["kept" if t["kept_float"] else "" for t in trade]
    return (
        "<h3>Float fallback: accuracy gain per latency cost</h3>"
        f'<p class="note">{note}. In the order tried; gain: the output noise the layer adds '
        "alone in INT8 (relative to the signal); cost: latency it adds in float "
        "(profiled kernels, the int8/float boundary and the per-island overhead).</p>"
        + _table(["layer", "SQNR alone (dB)", "gain", "cost (ms)", "kept float"], rows, cls)
    )


def _float_choices(choices: object) -> str:
    """The float stem and skip path, timed and scored on the compiling machine (only when
    measured: --auto-fallback); each kept or back to int8."""
    if not isinstance(choices, Mapping) or not choices.get("choices"):
        return ""
    rows = [
        (
            c["choice"],
            c.get("gain_db"),
            c.get("latency_vs_int8"),
            "yes" if c.get("by_spec") else "no",
            c["kept_float"],
            c.get("decided_by", "measurement"),
        )
        for c in choices["choices"]
    ]
    cls = ["kept" if c["kept_float"] else "" for c in choices["choices"]]
    price = _e(_num(choices.get("cost_per_db")))
    return (
        "<h3>Float choices: measured on this machine</h3>"
        f'<p class="note">Each choice alone against all-INT8 ({_e(_num(choices.get("int8_ms")))}'
        f" ms a call): kept when it buys accuracy and costs at most {price} of INT8's "
        "latency per dB; a cost within the timing noise of that price keeps the spec's "
        "rule.</p>"
        + _table(
            ["choice", "gain (dB)", "latency vs INT8", "spec's rule", "kept float", "decided by"],
            rows,
            cls,
        )
    )


def _overflow(overflow: object) -> str:
    """The layers whose int8 kernel overflowed on the compiling CPU, and their remedy."""
    if not isinstance(overflow, Mapping) or not overflow.get("overflowing"):
        return ""
    errors: Mapping[str, float] = overflow.get("overflowing_steps2") or {}
    channels: Mapping[str, int] = overflow.get("seven_bit_channels") or {}
    uint8 = set(overflow.get("uint8_weights") or [])

    def remedy(name: str) -> str:
        # a layer whose 7-bit channels still overflowed when measured again has both
        parts = []
        if name in channels:
            count = channels[name]
            parts.append("7-bit weights" + (f" ({count} channels)" if count else ""))
        if name in uint8:
            parts.append("uint8 weights")
        return " + ".join(parts) or "none"

    rows = [(name, errors.get(name), remedy(name)) for name in overflow["overflowing"]]
    return (
        "<h3>Integer kernels that overflow on this CPU</h3>"
        f'<p class="note">{_e(len(rows))} of {_e(overflow.get("probed_layers"))} layers: their'
        " u8s8 kernel saturated int16 pair sums on the compiling CPU (AVX2 without VNNI),"
        " measured against exact arithmetic on"
        f" {_e(overflow.get('samples'))} calibration samples (mean squared difference of"
        " the layer's uint8 output, in output steps²).</p>"
        + _table(["layer", "overflow error (steps²)", "remedy"], rows)
    )


def _quantization(report: Mapping[str, Any]) -> str:
    q = report.get("quantization")
    if not q:
        return ""
    kept = list(q.get("kept_float") or [])
    facts = (
        f"<p>spec {_e(q.get('spec'))}, {_e(q.get('mode') or 'static')}; calibration "
        f"{_e(q.get('method'))} on {_e(q.get('samples') or q.get('train_samples'))} samples "
        f"({_e(q.get('calibration_data'))}); {len(kept)} layer{'s' if len(kept) != 1 else ''} kept in float"
        f"{': ' + _e(', '.join(kept)) if kept else ''}{_e(overflow_text(q.get('overflow')))}</p>"
    )
    counts = q.get("qdq_counts") or {}
    qdq = _table(
        ["op", "Q/DQ"],
        [(op, ", ".join(f"{k} {v}" for k, v in c.items())) for op, c in counts.items()],
    )
    sens: Mapping[str, Mapping[str, Any]] = q.get("sensitivity") or {}
    local: Mapping[str, float] = q.get("layer_sqnr_db") or {}
    if sens or local:
        from compiler.report_plots import layer_bars

        merged: dict[str, dict[str, Any]] = {}
        for name, value in local.items():
            merged.setdefault(name, {})["local_sqnr_db"] = value
        for name, values in sens.items():
            merged.setdefault(name, {}).update(values)
        for name in kept:
            merged.setdefault(name, {})  # kept in float before anything measured it
        rows = list(merged.items())
        panels = []
        if local:
            panels.append(
                ("local_sqnr_db", "this layer's own output SQNR (dB; lower = more error)")
            )
        if sens:
            panels.append(("sqnr_db", "model output SQNR, only this layer INT8 (dB)"))
            if any(v.get("agreement") is not None for _, v in rows):
                panels.append(("agreement", "top-1 agreement, only this layer INT8"))
        how = (
            "own output SQNR: each layer's INT8 output against its float twin fed the same "
            "input, measured during bias correction (before it)"
            if local
            else ""
        )
        if sens:
            how += (
                "; " if how else ""
            ) + "sensitivity: the model's output with only that layer INT8"
        chart = (
            f'<figure id="layer-plot" data-layers="{len(rows)}" data-kept="{len(kept)}">'
            + layer_bars(rows, kept, panels)
            + f'<figcaption class="note">Every quantized layer in graph order, then those kept '
            f"in float; red: kept in float. {_e(how)}.</figcaption></figure>"
        )
        if not sens:
            chart += (
                '<p class="note">Compile with <code>--sensitivity</code> to add each layer\'s '
                "effect on the model's output.</p>"
            )
    else:
        chart = (
            '<p class="note">Per-layer error was not measured in this run (no bias '
            "correction); compile with <code>--sensitivity</code> for per-layer SQNR and "
            "agreement bars.</p>"
        )
    chart += (
        _float_choices(q.get("float_choices")) + _fallback_trade(q) + _overflow(q.get("overflow"))
    )
    title = "Quantization"
    if report.get("precision") != "int8":  # --precision auto chose another candidate
        title += " (the INT8 candidate, not chosen)"
    return _section("quantization", title, facts + chart + "<h3>Q/DQ per op type</h3>" + qdq)


def _sizes(report: Mapping[str, Any], inputs: HtmlInputs) -> str:
    before_p, after_p = inputs.baseline_onnx, inputs.artifact_onnx
    if before_p is None or after_p is None or not before_p.exists() or not after_p.exists():
        return ""
    from compiler.op_sizes import op_type_bytes
    from compiler.report_plots import size_bars

    try:
        before, after = op_type_bytes(before_p), op_type_bytes(after_p)
    except Exception as e:  # a report must not fail for its plot
        log.warning("size by op type not drawn: %s", e)
        return ""
    label = f"{report.get('precision')} artifact"
    ops = sorted(set(before) | set(after), key=lambda o: -max(before.get(o, 0), after.get(o, 0)))
    rows = [
        (
            o,
            before.get(o, 0) / 1e3,
            after.get(o, 0) / 1e3,
            _ratio(after.get(o, 0), before.get(o, 0)),
        )
        for o in ops
    ]
    rows.append(
        (
            "total",
            sum(before.values()) / 1e3,
            sum(after.values()) / 1e3,
            _ratio(sum(after.values()), sum(before.values())),
        )
    )
    return _section(
        "sizes",
        "Size by op type",
        '<p class="note">Weight (initializer) bytes charged to the op that consumes them, '
        "looking through Q/DQ and Cast; file sizes also hold the graph.</p>"
        f'<figure id="size-plot">{size_bars(before, after, label)}</figure>'
        + _table(["op type", "fp32 (kB)", f"{label} (kB)", "ratio"], rows),
    )


def _ratio(a: int, b: int) -> str:
    return f"×{a / b:.3g}" if b else "—"


def _auto(report: Mapping[str, Any]) -> str:
    auto = report.get("auto")
    if not auto:
        return ""
    chosen = auto.get("chosen")
    cands = auto.get("candidates") or []
    rows, cls = [], []
    for c in cands:
        if c["precision"] == chosen:
            why = "chosen"
        elif not c.get("meets_budget"):
            why = "rejected: below the accuracy budget"
        else:
            why = "rejected: slower"
        rows.append(
            (
                c["precision"],
                c.get("p50_ms"),
                c.get("latency_vs_fp32"),
                c.get("metric"),
                c.get("value"),
                c.get("limit"),
                why,
            )
        )
        cls.append("chosen" if c["precision"] == chosen else "")
    return _section(
        "auto",
        "Precision auto",
        f"<p>chose <b>{_e(chosen)}</b>: the fastest candidate whose accuracy meets the budget; "
        "the figures above are the chosen artifact's.</p>"
        + _table(
            ["candidate", "p50 (ms)", "latency vs fp32", "metric", "value", "budget", "decision"],
            rows,
            cls,
        ),
    )


def _passes(report: Mapping[str, Any]) -> str:
    passes = report.get("passes") or []
    if not passes:
        return ""
    header = ["pass", "nodes before", "nodes after", "seconds"]

    def row(p: Mapping[str, Any]) -> tuple[Any, ...]:
        return (p["name"], p.get("nodes_before"), p.get("nodes_after"), p.get("seconds"))

    changed = [row(p) for p in passes if p.get("changed")]
    same = [row(p) for p in passes if not p.get("changed")]
    body = _table(header, changed) if changed else '<p class="note">No pass changed the graph.</p>'
    if same:
        body += (
            f'<details id="unchanged-passes"><summary>{len(same)} pass'
            f"{'es' if len(same) != 1 else ''} left the graph unchanged</summary>"
            + _table(header, same)
            + "</details>"
        )
    return _section(
        "passes", f"Passes that changed the graph ({len(changed)} of {len(passes)})", body
    )


def _versions(report: Mapping[str, Any], inputs: HtmlInputs) -> str:
    env = report.get("environment") or {}
    rows: list[tuple[str, Any]] = [("edgec", report.get("edgec_version"))]
    rows += [(k, v) for k, v in env.items()]
    m = report.get("model") or {}
    rows.append(("model sha256", m.get("sha256")))
    a = report.get("artifact") or {}
    rows.append(("artifact sha256", a.get("sha256")))
    s = report.get("seconds") or {}
    rows.append(("seconds", ", ".join(f"{k} {v}" for k, v in s.items() if v is not None)))
    cmd = (
        f"<p>command: <code>{_e(inputs.command)}</code></p>"
        if inputs.command
        else '<p class="note">command not recorded (compiled in-process, not from the edgec '
        "command line).</p>"
    )
    return _section("versions", "Versions and command", cmd + _table([], rows))


def to_html(
    report: Mapping[str, Any],
    summary: Sequence[tuple[str, str]],
    inputs: HtmlInputs | None = None,
) -> str:
    """The page; `summary` is `compiler.report.summary_rows(report)`."""
    inputs = inputs or HtmlInputs()
    name = _e((report.get("model") or {}).get("name"))
    warnings = "".join(
        f'<p class="note">warning: {_e(w)}</p>' for w in report.get("warnings") or []
    )
    body = [
        f"<h1>edgec report: {name}</h1>",
        _verdict(report),
        warnings,
        _gates(report),
        _summary(summary),
        _auto(report),
        _latency(report, inputs),
        _accuracy(report),
        _quantization(report),
        _sizes(report, inputs),
        _passes(report),
        _versions(report, inputs),
    ]
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>edgec report: {name}</title>\n'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">\n<style>{_CSS}</style>\n'
        "</head><body>\n" + "\n".join(p for p in body if p) + "\n</body></html>\n"
    )
