"""report.json / report.md / report.html from one report dict.

report.json is the contract (every top-level key of DESIGN.md, null where it
does not apply); md is for pull-request comments; html is the page a person
decides from, with matplotlib plots inlined as SVG (`compiler.report_html`,
imported only when html is asked for).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compiler.gates import margin_words
from compiler.ground.io import atomic_write_text
from compiler.report_text import fmt, overflow_text


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


def _pruning_row(pruning: dict[str, Any], a: dict[str, Any]) -> tuple[str, str]:
    """What pruning did: mode, ratio, sparsity or channels, fine-tuning."""
    text = f"{pruning.get('mode')} {pruning.get('ratio')}"
    if pruning.get("sparsity") is not None:
        text += f" · sparsity {fmt(pruning.get('sparsity'))}"
    if pruning.get("channels_before") is not None:
        text += f" · channels {pruning.get('channels_before')} → {pruning.get('channels_after')}"
    if a.get("compressed_size_bytes") is not None:
        text += f" · compressed {fmt(a['compressed_size_bytes'] / 1e6)} MB"
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
    text = (
        f"{q.get('spec')} spec · {q.get('method')} on "
        f"{q.get('samples') or q.get('train_samples')} samples · "
        f"{len(kept)} layers kept float{(': ' + ', '.join(kept[:6])) if kept else ''}"
    )
    fb = q.get("fallback")
    if isinstance(fb, dict) and fb.get("latency_bound_ratio") is not None:
        text += (
            f" · fallback predicted {fb.get('predicted_latency_ratio')}x FP32 (bound "
            f"{fb.get('latency_bound_ratio')}x, all-INT8 {fb.get('int8_latency_ratio')}x)"
            + ("" if fb.get("accuracy_met") else "; accuracy budget not met within the bound")
        )
    text += overflow_text(q.get("overflow"))
    return ("quantization", text)


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
            f"{c['precision']} p50 {fmt(c['p50_ms'])} ms {c['metric']} {fmt(c['value'])}"
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
            f"{m.get('name')} ({m.get('source')}, {fmt(m.get('params'))} params, opset {m.get('opset')})",
        ),
        ("target / precision", f"{report.get('target')} / {report.get('precision')}"),
        ("artifact", f"{a.get('path')} ({fmt((a.get('size_bytes') or 0) / 1e6)} MB)"),
    ]
    if lat:
        rows.append(
            (
                "latency (ms)",
                f"p50 {fmt(lat.get('p50'))} · p90 {fmt(lat.get('p90'))} · p99 {fmt(lat.get('p99'))} "
                f"(batch {lat.get('batch')}, {lat.get('threads')} threads, {lat.get('iterations')} runs)",
            )
        )
    if b:
        parts = [
            f"fp32 {fmt((b.get('size_bytes') or 0) / 1e6)} MB, p50 {fmt(b.get('latency_ms'))} ms"
        ]
        if b.get("speedup") is not None:
            parts.append(f"speedup ×{fmt(b.get('speedup'), 3)}")
        if b.get("torch_latency_ms") is not None:
            parts.append(f"torch eager p50 {fmt(b.get('torch_latency_ms'))} ms")
        rows.append(("baseline", " · ".join(parts)))
    if acc:
        rows.append(
            (
                "vs fp32 original",
                f"top-1 agreement {fmt(acc.get('top1_agreement'))} · top-5 {fmt(acc.get('top5_agreement'))} · "
                f"cosine {fmt(acc.get('cosine'), 6)} (min {fmt(acc.get('min_cosine'), 6)}) · SQNR {fmt(acc.get('sqnr_db'))} dB · "
                f"max |err| {fmt(acc.get('max_abs_error'))} ({acc.get('samples')} samples)",
            )
        )
        margins = _top1_margin_text(acc)
        if margins:
            rows.append(("top-1 margin", margins))
        if acc.get("top1_accuracy") is not None:
            rows.append(
                (
                    "label accuracy",
                    f"{fmt(acc.get('top1_accuracy'))} (fp32 original {fmt(acc.get('baseline_top1_accuracy'))})",
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
                f"{'passed' if g['passed'] else 'FAILED'}: {fmt(g['value'])} vs {g['limit']}"
                + ("" if g.get("margin_db") is None else f" ({margin_words(g['margin_db'])})"),
            )
        )
    for warning in report.get("warnings") or []:
        rows.append(("warning", warning))
    rows.append(("passed", fmt(report.get("passed"))))
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
            f"| {p['name']} | {fmt(p['changed'])} | {p['nodes_before']} | {p['nodes_after']} | {p['seconds']:.3f} |"
            for p in passes
        ]
    lines += ["", f"edgec {report.get('edgec_version')}", ""]
    return "\n".join(lines)


def write_reports(
    report: dict[str, Any],
    out_dir: Path,
    formats: Sequence[str],
    latency_samples_ms: Sequence[float] = (),
    *,
    baseline_samples_ms: Sequence[float] = (),
    baseline_onnx: Path | None = None,
    artifact_onnx: Path | None = None,
    command: str | None = None,
) -> list[Path]:
    """Write report.json always, plus md/html when asked; each atomically.

    The keyword arguments feed report.html only (`compiler.report_html.HtmlInputs`):
    the baseline's latency samples, the two ONNX files for size by op type, and the
    command line that ran.
    """
    written = [out_dir / "report.json"]
    atomic_write_text(written[0], to_json(report))
    if "md" in formats:
        written.append(out_dir / "report.md")
        atomic_write_text(written[-1], to_markdown(report))
    if "html" in formats:
        from compiler.report_html import HtmlInputs, to_html

        inputs = HtmlInputs(
            latency_samples_ms=latency_samples_ms,
            baseline_samples_ms=baseline_samples_ms,
            baseline_onnx=baseline_onnx,
            artifact_onnx=artifact_onnx,
            command=command,
        )
        written.append(out_dir / "report.html")
        atomic_write_text(written[-1], to_html(report, summary_rows(report), inputs))
    return written


def _top1_margin_text(acc: dict[str, Any]) -> str:
    """How firm top-1 agreement is, in dB of SQNR (`compiler/evaluate.py`); "" if unknown."""
    parts = []
    if acc.get("top1_headroom_db") is not None:
        parts.append(f"the next flip {fmt(acc['top1_headroom_db'])} dB of SQNR away")
    if acc.get("top1_flips_cleared_db") is not None:
        parts.append(f"every flip agrees again {fmt(acc['top1_flips_cleared_db'])} dB higher")
    return " · ".join(parts)
