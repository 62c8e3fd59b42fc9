"""report.json / report.md / report.html from one report dict.

report.json is the contract (every top-level key of DESIGN.md, null where it
does not apply); md is for pull-request comments; html adds the plots a person
would rather see than read (latency distribution), drawn as inline SVG so the
report is one self-contained file with no plotting dependency.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compiler.ground.io import atomic_write_text


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=2, sort_keys=False) + "\n"


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pruning_row(pruning: dict[str, Any], a: dict[str, Any]) -> tuple[str, str]:
    """What pruning did: mode, ratio, sparsity or channels, fine-tuning."""
    text = f"{pruning.get('mode')} {pruning.get('ratio')}"
    if pruning.get("sparsity") is not None:
        text += f" · sparsity {_fmt(pruning.get('sparsity'))}"
    if pruning.get("channels_before") is not None:
        text += f" · channels {pruning.get('channels_before')} → {pruning.get('channels_after')}"
    if a.get("compressed_size_bytes") is not None:
        text += f" · compressed {_fmt(a['compressed_size_bytes'] / 1e6)} MB"
    ft = pruning.get("finetune")
    if ft:
        text += (
            f" · {ft['metric']} {ft['accuracy_unpruned']} → {ft['accuracy_pruned']} (pruned)"
            f" → {ft['accuracy_finetuned']} after {ft['epochs']} epochs"
        )
    if pruning.get("note"):
        text += f" · note: {pruning['note']}"
    return ("pruning", text)


def _quantization_row(q: dict[str, Any]) -> tuple[str, str]:
    """The quantization spec, method, samples and the layers kept in float."""
    kept = q.get("kept_float") or []
    return (
        "quantization",
        f"{q.get('spec')} spec · {q.get('method')} on "
        f"{q.get('samples') or q.get('train_samples')} samples · "
        f"{len(kept)} layers kept float{(': ' + ', '.join(kept[:6])) if kept else ''}",
    )


def _fp16_row(fp16: dict[str, Any]) -> tuple[str, str]:
    """How much of the graph computes in float16, and what stayed float32 and why."""
    kept = fp16.get("kept_by_reason") or {}
    reasons = ", ".join(f"{n} {reason}" for reason, n in kept.items())
    io = "float32 inputs/outputs" if fp16.get("keep_io_types") else "float16 inputs/outputs"
    return (
        "fp16",
        f"{fp16.get('converted')} nodes float16 · {sum(kept.values())} kept float32"
        f"{(' (' + reasons + ')') if reasons else ''} · {fp16.get('casts_inserted')} casts · "
        f"{io} · decided on {fp16.get('samples')} calibration samples",
    )


def _auto_row(auto: dict[str, Any]) -> tuple[str, str]:
    """`--precision auto`: the choice and every candidate's figures."""
    return (
        "auto precision",
        f"chose {auto['chosen']} · "
        + " · ".join(
            f"{c['precision']} p50 {_fmt(c['p50_ms'])} ms {c['metric']} {_fmt(c['value'])}"
            f"{'' if c['meets_budget'] else ' (below budget)'}"
            for c in auto["candidates"]
        ),
    )


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The key facts as (label, value) rows: used by md, html and the terminal table."""
    m = report.get("model") or {}
    a = report.get("artifact") or {}
    b = report.get("baseline") or {}
    lat = report.get("latency_ms") or {}
    acc = report.get("accuracy") or {}
    rows = [
        (
            "model",
            f"{m.get('name')} ({m.get('source')}, {_fmt(m.get('params'))} params, opset {m.get('opset')})",
        ),
        ("target / precision", f"{report.get('target')} / {report.get('precision')}"),
        ("artifact", f"{a.get('path')} ({_fmt((a.get('size_bytes') or 0) / 1e6)} MB)"),
    ]
    if lat:
        rows.append(
            (
                "latency (ms)",
                f"p50 {_fmt(lat.get('p50'))} · p90 {_fmt(lat.get('p90'))} · p99 {_fmt(lat.get('p99'))} "
                f"(batch {lat.get('batch')}, {lat.get('threads')} threads, {lat.get('iterations')} runs)",
            )
        )
    if b:
        parts = [
            f"fp32 {_fmt((b.get('size_bytes') or 0) / 1e6)} MB, p50 {_fmt(b.get('latency_ms'))} ms"
        ]
        if b.get("speedup") is not None:
            parts.append(f"speedup ×{_fmt(b.get('speedup'), 3)}")
        if b.get("torch_latency_ms") is not None:
            parts.append(f"torch eager p50 {_fmt(b.get('torch_latency_ms'))} ms")
        rows.append(("baseline", " · ".join(parts)))
    if acc:
        rows.append(
            (
                "vs fp32 original",
                f"top-1 agreement {_fmt(acc.get('top1_agreement'))} · top-5 {_fmt(acc.get('top5_agreement'))} · "
                f"cosine {_fmt(acc.get('cosine'), 6)} (min {_fmt(acc.get('min_cosine'), 6)}) · SQNR {_fmt(acc.get('sqnr_db'))} dB · "
                f"max |err| {_fmt(acc.get('max_abs_error'))} ({acc.get('samples')} samples)",
            )
        )
        if acc.get("top1_accuracy") is not None:
            rows.append(
                (
                    "label accuracy",
                    f"{_fmt(acc.get('top1_accuracy'))} (fp32 original {_fmt(acc.get('baseline_top1_accuracy'))})",
                )
            )
    if report.get("pruning"):
        rows.append(_pruning_row(report["pruning"], a))
    if report.get("quantization"):
        rows.append(_quantization_row(report["quantization"]))
    if report.get("fp16"):
        rows.append(_fp16_row(report["fp16"]))
    if report.get("auto"):
        rows.append(_auto_row(report["auto"]))
    for g in report.get("gates") or []:
        rows.append(
            (
                f"gate {g['name']}",
                f"{'passed' if g['passed'] else 'FAILED'}: {_fmt(g['value'])} vs {g['limit']}",
            )
        )
    for warning in report.get("warnings") or []:
        rows.append(("warning", warning))
    rows.append(("passed", _fmt(report.get("passed"))))
    return rows


def _cell(value: object) -> str:
    """A Markdown table cell: a `|` in a value (a path, a calibration description) would
    end the cell early, and a newline the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# edgec report: {(report.get('model') or {}).get('name')}", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in summary_rows(report)]
    passes = report.get("passes") or []
    if passes:
        lines += [
            "",
            "## Passes",
            "",
            "| pass | changed | nodes before | nodes after | seconds |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['name']} | {_fmt(p['changed'])} | {p['nodes_before']} | {p['nodes_after']} | {p['seconds']:.3f} |"
            for p in passes
        ]
    lines += ["", f"edgec {report.get('edgec_version')}", ""]
    return "\n".join(lines)


def latency_svg(
    samples_ms: Sequence[float], *, width: int = 560, height: int = 200, bins: int = 40
) -> str:
    """A histogram of per-iteration latency, with p50/p99 markers."""
    if not samples_ms:
        return "<p>no latency samples</p>"
    xs = sorted(samples_ms)
    lo, hi = xs[0], xs[-1]
    span = (hi - lo) or max(hi, 1e-6) * 0.01
    counts = [0] * bins
    for x in xs:
        counts[min(bins - 1, int((x - lo) / span * bins))] += 1
    top = max(counts)
    pad, bw = 30, (width - 40) / bins
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        bars.append(
            f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{bw - 1:.1f}" '
            f'height="{h:.1f}" fill="#4c78a8"/>'
        )
    marks = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        v = xs[min(len(xs) - 1, int(q * (len(xs) - 1)))]
        x = pad + (v - lo) / span * (width - 40)
        marks.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad - 10}" y2="{height - pad}" stroke="#e45756"/>'
            f'<text x="{x + 3:.1f}" y="{pad - 12}" font-size="11">{label} {v:.3g} ms</text>'
        )
    axis = (
        f'<text x="{pad}" y="{height - 8}" font-size="11">{lo:.3g} ms</text>'
        f'<text x="{width - 70}" y="{height - 8}" font-size="11">{hi:.3g} ms</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="latency histogram">{"".join(bars)}{"".join(marks)}{axis}</svg>'
    )


def sensitivity_svg(
    sensitivity: dict[str, dict[str, float]], kept_float: Sequence[str] = (), *, width: int = 640
) -> str:
    """Per-layer output SQNR when only that layer is INT8: the shortest bars hurt most."""
    rows = sorted(sensitivity.items(), key=lambda kv: kv[1].get("sqnr_db") or 0.0)
    if not rows:
        return "<p>no sensitivity data</p>"
    top = max((v.get("sqnr_db") or 0.0) for _, v in rows) or 1.0
    bar_h, label_w = 14, 230
    height = bar_h * len(rows) + 20
    parts = []
    for i, (name, v) in enumerate(rows):
        db = v.get("sqnr_db") or 0.0
        w = max(1.0, (width - label_w - 60) * max(db, 0.0) / top)
        y = 10 + i * bar_h
        color = "#e45756" if name in kept_float else "#4c78a8"
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 11}" font-size="10" text-anchor="end">'
            f"{html.escape(name[-40:])}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 3}" fill="{color}"/>'
            f'<text x="{label_w + w + 3:.1f}" y="{y + 11}" font-size="10">{db:.1f} dB</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="per-layer sensitivity">{"".join(parts)}</svg>'
    )


def to_html(report: dict[str, Any], latency_samples_ms: Sequence[float] = ()) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(report))
    passes = report.get("passes") or []
    pass_rows = "".join(
        f"<tr><td>{esc(p['name'])}</td><td>{_fmt(p['changed'])}</td><td>{p['nodes_before']}</td>"
        f"<td>{p['nodes_after']}</td><td>{p['seconds']:.3f}</td></tr>"
        for p in passes
    )
    name = esc(str((report.get("model") or {}).get("name")))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgec report: {name}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body>
<h1>edgec report: {name}</h1>
<table>{rows}</table>
<h2>Latency distribution</h2>
{latency_svg(latency_samples_ms)}
{_quantization_html(report)}
<h2>Passes</h2>
<table><tr><th>pass</th><th>changed</th><th>nodes before</th><th>nodes after</th><th>seconds</th></tr>{pass_rows}</table>
<p>edgec {esc(str(report.get("edgec_version")))}</p>
</body></html>
"""


def _quantization_html(report: dict[str, Any]) -> str:
    q = report.get("quantization")
    if not q:
        return ""
    esc = html.escape
    counts = q.get("qdq_counts") or {}
    rows = "".join(
        f"<tr><td>{esc(op)}</td><td>{esc(', '.join(f'{k} {v}' for k, v in c.items()))}</td></tr>"
        for op, c in counts.items()
    )
    kept = q.get("kept_float") or []
    out = [
        "<h2>Quantization</h2>",
        f"<p>spec {esc(str(q.get('spec')))}, calibration {esc(str(q.get('method')))} on "
        f"{q.get('samples')} samples ({esc(str(q.get('calibration_data')))}); "
        f"layers kept in float: {esc(', '.join(kept) or 'none')}</p>",
        f"<table><tr><th>op</th><th>Q/DQ</th></tr>{rows}</table>",
    ]
    if q.get("sensitivity"):
        out += [
            "<h3>Per-layer sensitivity (output SQNR with only that layer in INT8; red: kept in float)</h3>",
            sensitivity_svg(q["sensitivity"], kept),
        ]
    return "\n".join(out)


def write_reports(
    report: dict[str, Any],
    out_dir: Path,
    formats: Sequence[str],
    latency_samples_ms: Sequence[float] = (),
) -> list[Path]:
    """Write report.json always, plus md/html when asked; each atomically."""
    written = [out_dir / "report.json"]
    atomic_write_text(written[0], to_json(report))
    if "md" in formats:
        written.append(out_dir / "report.md")
        atomic_write_text(written[-1], to_markdown(report))
    if "html" in formats:
        written.append(out_dir / "report.html")
        atomic_write_text(written[-1], to_html(report, latency_samples_ms))
    return written
