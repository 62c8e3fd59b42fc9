"""report.html: sections, verdict colour, latency markers equal to the table, outliers,
kept-float layers, folded passes, auto candidates, sizes by op type, determinism."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler.report import summary_rows, write_reports
from compiler.report_html import SECTION_IDS, HtmlInputs, to_html, verdict_class
from compiler.report_plots import percentile_marks
from targets.latency import LatencyStats


def _samples(seed: int, n: int, center: float, outlier: float | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    xs = (center * (1 + 0.05 * rng.standard_normal(n))).tolist()
    if outlier is not None:
        xs[n // 2] = outlier
    return xs


ART = _samples(0, 200, 1.0, outlier=500.0)  # one call 500x slower than the rest
BASE = _samples(1, 200, 2.0)


def _report(**over: Any) -> dict[str, Any]:
    stats = LatencyStats.from_samples(tuple(ART), batch=1, threads=2, warmup=10)
    base = LatencyStats.from_samples(tuple(BASE), batch=1, threads=2, warmup=10)
    report: dict[str, Any] = {
        "edgec_version": "0.1.0",
        "model": {
            "name": "toy",
            "source": "zoo",
            "sha256": "ab" * 32,
            "params": 1000,
            "opset": 17,
            "nodes": 9,
        },
        "target": "cpu",
        "precision": "int8",
        "passes": [
            {
                "name": "FuseConvBatchNormPass",
                "changed": True,
                "nodes_before": 9,
                "nodes_after": 8,
                "seconds": 0.01,
            },
            {
                "name": "RemoveIdentityPass",
                "changed": False,
                "nodes_before": 8,
                "nodes_after": 8,
                "seconds": 0.0,
            },
            {
                "name": "SimplifyWithOnnxsimPass",
                "changed": False,
                "nodes_before": 8,
                "nodes_after": 8,
                "seconds": 0.2,
            },
        ],
        "artifact": {
            "path": "build/toy/toy.int8.onnx",
            "format": "onnx",
            "size_bytes": 30000,
            "compressed_size_bytes": 28000,
            "sha256": "cd" * 32,
        },
        "baseline": {
            "precision": "fp32",
            "size_bytes": 100000,
            "latency_ms": base.to_dict()["p50"],
            "speedup": 2.0,
            "latency_ratio": 0.5,
            "size_ratio": 0.3,
            "torch_latency_ms": None,
            "speedup_vs_torch": None,
        },
        "latency_ms": stats.to_dict(),
        "accuracy": {
            "samples": 100,
            "top1_agreement": 0.99,
            "top5_agreement": 1.0,
            "cosine": 0.9995,
            "min_cosine": 0.99,
            "sqnr_db": 31.5,
            "max_abs_error": 0.2,
            "top1_accuracy": 0.97,
            "baseline_top1_accuracy": 0.975,
            "output": "logits",
            "source": "zoo:toy held-out set",
            "outputs": {
                "logits": {
                    "samples": 100,
                    "top1_agreement": 0.99,
                    "cosine": 0.9995,
                    "sqnr_db": 31.5,
                },
                "embedding": {
                    "samples": 100,
                    "top1_agreement": None,
                    "cosine": 0.998,
                    "sqnr_db": 27.25,
                },
            },
        },
        "gates": [
            {
                "name": "max_size_mb",
                "metric": "size_mb",
                "limit": 1.0,
                "value": 0.03,
                "passed": True,
            },
            {
                "name": "min_accuracy",
                "metric": "top1_accuracy",
                "limit": 0.96,
                "value": 0.97,
                "passed": True,
            },
        ],
        "passed": True,
        "seconds": {"compile": 3.0, "calibrate": 1.0, "measure": 2.0},
        "pruning": None,
        "quantization": {
            "spec": "cpu",
            "method": "percentile",
            "samples": 64,
            "mode": "static",
            "calibration_data": "zoo:toy calibration set",
            "qdq_counts": {"Conv": {"nodes": 3, "weight": 3}},
            "kept_float": ["/stem/Conv", "/head/Gemm"],
            "sensitivity": {
                "/head/Gemm": {"sqnr_db": 12.5, "agreement": 0.9},
                "/block1/Conv": {"sqnr_db": 35.0, "agreement": 1.0},
                "/block2/Conv": {"sqnr_db": 28.0, "agreement": 0.995},
            },
        },
        "fp16": None,
        "auto": None,
        "warnings": [],
        "memory": None,
        "environment": {
            "hostname": "ci",
            "cpu": "Test CPU",
            "cores": 2,
            "os": "Linux",
            "python": "3.11.7",
            "onnxruntime": "1.20.0",
        },
    }
    report.update(over)
    return report


def _html(report: dict[str, Any], **inputs: Any) -> str:
    defaults: dict[str, Any] = {"latency_samples_ms": ART, "baseline_samples_ms": BASE}
    return to_html(report, summary_rows(report), HtmlInputs(**{**defaults, **inputs}))


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_every_section_present_verdict_first_one_file(tmp_path: Path) -> None:
    page = _html(
        _report(auto={"chosen": "int8", "candidates": []}),
        command="edgec compile toy",
        baseline_onnx=_onnx(tmp_path / "fp32.onnx", quantized=False),
        artifact_onnx=_onnx(tmp_path / "int8.onnx", quantized=True),
    )
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page, sid
    positions = [page.index(f'id="{sid}"') for sid in SECTION_IDS]
    assert positions == sorted(positions)  # verdict, then gates, ... in page order
    # self-contained: no scripts, no external resources (only in-page #id references)
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert re.findall(r'href="([^"]*)"', page) == [
        h for h in re.findall(r'href="([^"]*)"', page) if h.startswith("#")
    ]
    assert "<metadata>" not in page
    assert "<code>edgec compile toy</code>" in page


@pytest.mark.parametrize(
    ("gates", "passed", "cls"),
    [
        (
            [
                {
                    "name": "max_size_mb",
                    "metric": "size_mb",
                    "limit": 1,
                    "value": 0.1,
                    "passed": True,
                }
            ],
            True,
            "verdict-pass",
        ),
        (
            [
                {
                    "name": "max_size_mb",
                    "metric": "size_mb",
                    "limit": 0.01,
                    "value": 0.1,
                    "passed": False,
                }
            ],
            False,
            "verdict-fail",
        ),
        ([], True, "verdict-none"),
    ],
    ids=["pass", "fail", "no-budgets"],
)
def test_verdict_colour_class(gates: list[dict[str, Any]], passed: bool, cls: str) -> None:
    report = _report(gates=gates, passed=passed)
    assert verdict_class(report) == cls
    page = _html(report)
    assert f'<div id="verdict" class="verdict {cls}">' in page
    gates_html = _section(page, "gates")
    if cls == "verdict-fail":
        assert '<tr class="fail">' in gates_html and "FAIL" in gates_html
    elif cls == "verdict-pass":
        assert '<tr class="pass">' in gates_html


def test_latency_markers_equal_the_table_and_outliers_are_counted() -> None:
    report = _report()
    page = _html(report)
    lat = _section(page, "latency")
    fig = re.search(
        r'<figure id="latency-plot" data-p50-ms="([^"]+)" data-p99-ms="([^"]+)" data-x-max-ms="([^"]+)" data-hidden="(\d+)"',
        lat,
    )
    assert fig
    p50, p99, x_max, hidden = float(fig[1]), float(fig[2]), float(fig[3]), int(fig[4])
    # the same numbers as report.json's latency_ms (the table), not a re-estimate
    assert p50 == report["latency_ms"]["p50"] and p99 == report["latency_ms"]["p99"]
    table_row = re.search(r"<tr><td>int8 artifact</td>(.*?)</tr>", lat)
    assert table_row and f">{p99:.4g}<" in table_row.group(1)
    # the 500 ms call is not drawn: the axis ends near the bulk, and the page says so
    assert x_max < 5.0 and hidden == 1
    assert f"1 sample beyond {x_max:.4g} ms not shown" in lat
    # the baseline is on the same plot with its own markers
    assert (
        "fp32 baseline" in lat
        and f"fp32 baseline p50 {percentile_marks(BASE)['p50']:.4g} ms" in lat
    )
    assert "latency per call (ms)" in lat  # axis labelled with units


def test_without_outliers_nothing_is_hidden() -> None:
    art = _samples(2, 100, 1.0)
    stats = LatencyStats.from_samples(tuple(art), batch=1, threads=1, warmup=1)
    page = _html(_report(latency_ms=stats.to_dict()), latency_samples_ms=art)
    assert 'data-hidden="0"' in page and "not shown" not in page


def test_kept_float_layers_marked_in_colour_with_a_matching_legend() -> None:
    from compiler.report_plots import FLOAT_COLOR, QUANT_COLOR

    q = _section(_html(_report()), "quantization")
    # every layer: the three measured plus /stem/Conv kept before sensitivity ran
    assert 'data-layers="4" data-kept="2"' in q
    for name in ("/head/Gemm", "/block1/Conv", "/block2/Conv", "/stem/Conv"):
        assert name in q
    assert "kept in float" in q and "quantized (INT8)" in q  # legend entries
    assert f"fill: {FLOAT_COLOR}" in q and f"fill: {QUANT_COLOR}" in q


def test_legend_names_only_colours_drawn() -> None:
    report = _report()
    report["quantization"] = {**report["quantization"], "kept_float": []}
    q = _section(_html(report), "quantization")
    svg = q[q.index("<svg") : q.index("</svg>")]
    assert "quantized (INT8)" in svg and "kept in float" not in svg


def test_no_sensitivity_says_how_to_get_it() -> None:
    report = _report()
    report["quantization"] = {**report["quantization"], "sensitivity": None}
    q = _section(_html(report), "quantization")
    assert "--sensitivity" in q and "<svg" not in q


def test_unchanged_passes_folded() -> None:
    passes = _section(_html(_report()), "passes")
    shown, folded = passes.split('<details id="unchanged-passes">')
    assert "FuseConvBatchNormPass" in shown and "RemoveIdentityPass" not in shown
    assert "2 passes left the graph unchanged" in folded
    assert "RemoveIdentityPass" in folded and "SimplifyWithOnnxsimPass" in folded


def test_accuracy_per_output() -> None:
    acc = _section(_html(_report()), "accuracy")
    assert "output logits" in acc and "output embedding" in acc and "27.25" in acc
    assert "zoo:toy held-out set" in acc


def test_auto_candidates_compared() -> None:
    auto = {
        "chosen": "int8",
        "candidates": [
            {
                "precision": "fp32",
                "p50_ms": 2.0,
                "latency_vs_fp32": 1.0,
                "metric": "top1_accuracy",
                "value": 0.975,
                "limit": 0.96,
                "meets_budget": True,
            },
            {
                "precision": "int8",
                "p50_ms": 1.0,
                "latency_vs_fp32": 0.5,
                "metric": "top1_accuracy",
                "value": 0.97,
                "limit": 0.96,
                "meets_budget": True,
            },
            {
                "precision": "int8-dynamic",
                "p50_ms": 1.5,
                "latency_vs_fp32": 0.75,
                "metric": "top1_accuracy",
                "value": 0.9,
                "limit": 0.96,
                "meets_budget": False,
            },
        ],
    }
    sec = _section(_html(_report(auto=auto)), "auto")
    assert "chose <b>int8</b>" in sec
    assert '<tr class="chosen"><td>int8</td>' in sec
    assert "rejected: slower" in sec and "rejected: below the accuracy budget" in sec
    assert 'id="auto"' not in _html(_report())  # no auto section without --precision auto


def _onnx(path: Path, quantized: bool) -> Path:
    """Conv(weight) → Gemm(weight): fp32 weights, or int8 weights behind DequantizeLinear."""
    w = np.ones((4, 3, 3, 3), np.float32)
    g = np.ones((4, 2), np.float32)
    nodes, inits = [], []
    for name, arr in (("w", w), ("g", g)):
        if quantized:
            inits += [
                onnx.numpy_helper.from_array(arr.astype(np.int8), f"{name}_q"),
                onnx.numpy_helper.from_array(np.array(0.1, np.float32), f"{name}_s"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s"], [name]))
        else:
            inits.append(onnx.numpy_helper.from_array(arr, name))
    nodes += [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_size_by_op_type_looks_through_dequantize(tmp_path: Path) -> None:
    from compiler.op_sizes import op_type_bytes

    before = _onnx(tmp_path / "fp32.onnx", quantized=False)
    after = _onnx(tmp_path / "int8.onnx", quantized=True)
    assert op_type_bytes(before) == {"Conv": 108 * 4, "Gemm": 8 * 4}
    assert op_type_bytes(after) == {"Conv": 108 + 4, "Gemm": 8 + 4}
    sizes = _section(_html(_report(), baseline_onnx=before, artifact_onnx=after), "sizes")
    assert '<figure id="size-plot">' in sizes and "<td>Conv</td>" in sizes
    assert 'id="sizes"' not in _html(_report())  # no files, no section


def test_write_reports_html_is_deterministic(tmp_path: Path) -> None:
    report = _report()
    pages = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        written = write_reports(
            copy.deepcopy(report), tmp_path / d, ("html",), ART, baseline_samples_ms=BASE
        )
        assert [p.name for p in written] == ["report.json", "report.html"]
        pages.append((tmp_path / d / "report.html").read_bytes())
    assert pages[0] == pages[1]


def test_html_not_asked_for_does_not_import_matplotlib(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, json; from pathlib import Path; from compiler.report import write_reports; "
        f"write_reports(json.loads({_json_literal(_report())!r}), Path({str(tmp_path)!r}), ('json', 'md')); "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def _json_literal(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report)


def test_command_line_recorded_only_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from compiler.cli import _command_line

    monkeypatch.setattr(
        sys,
        "argv",
        ["/venv/bin/edgec", "compile", "digits_cnn", "--out", "my dir", "--report", "html"],
    )
    assert _command_line("digits_cnn") == "edgec compile digits_cnn --out 'my dir' --report html"
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests"])  # compiled in-process
    assert _command_line("digits_cnn") is None


def test_local_layer_error_drawn_without_sensitivity() -> None:
    """A default INT8 run has no --sensitivity but bias correction's per-layer error:
    every layer gets a bar, kept-float layers are still listed in red."""
    report = _report()
    report["quantization"] = {
        **report["quantization"],
        "sensitivity": None,
        "layer_sqnr_db": {"/block1/Conv": 41.5, "/block2/Conv": 33.25},
    }
    q = _section(_html(report), "quantization")
    assert 'data-layers="4" data-kept="2"' in q  # two measured, two kept in float
    assert "own output SQNR" in q and "41.5" in q and "33.2" in q
    assert "--sensitivity" in q  # how to add the model-level panel


def _quantization_html(**fields: object) -> str:
    """The quantization section of a report whose quantization has `fields` too."""
    report = _report()
    report["quantization"] = {**report["quantization"], **fields}
    return _section(_html(report), "quantization")


def test_fallback_trade_table_marks_the_layers_kept_float() -> None:
    q = _quantization_html(
        fallback={
            "accuracy_met": False,
            "int8_latency_ratio": 0.5,
            "latency_bound_ratio": 0.6,
            "predicted_latency_ratio": 0.58,
        },
        fallback_trade=[
            {
                "layer": "/block1/Conv",
                "sqnr_db": 20.0,
                "gain": 0.01,
                "latency_cost_ms": 0.1,
                "latency_cost": 0.02,
                "kept_float": True,
            },
            {
                "layer": "/head/Gemm",
                "sqnr_db": 40.0,
                "gain": 1e-4,
                "latency_cost_ms": 0.3,
                "latency_cost": 0.06,
                "kept_float": False,
            },
        ],
    )
    assert "accuracy gain per latency cost" in q and "accuracy budget NOT met" in q
    assert "bound 0.6x" in q and '<tr class="kept"><td>/block1/Conv</td>' in q
    assert "<tr><td>/head/Gemm</td>" in q
    plain = _section(_html(_report()), "quantization")  # no fallback: no table
    assert "accuracy gain per latency cost" not in plain


def test_float_choices_table_shows_each_measured_choice() -> None:
    q = _quantization_html(
        float_choices={
            "measured": True,
            "cost_per_db": 0.02,
            "int8_ms": 2.67,
            "choices": [
                {"choice": "stem", "gain_db": 1.62, "latency_vs_int8": 0.98, "by_spec": True,
                 "kept_float": True},
                {"choice": "skip", "gain_db": 0.28, "latency_vs_int8": 1.05, "by_spec": False,
                 "kept_float": False, "decided_by": "spec"},
            ],
        },
    )  # fmt: skip
    assert "Float choices: measured on this machine" in q and "2.67 ms" in q
    assert '<tr class="kept"><td>stem</td><td class="num">1.62</td>' in q
    assert '<tr><td>skip</td><td class="num">0.28</td><td class="num">1.05</td><td>no</td>' in q
    assert "<td>spec</td></tr>" in q and "<td>measurement</td></tr>" in q  # decided by
    plain = _section(_html(_report()), "quantization")  # not measured: no table
    assert "Float choices" not in plain


def test_command_recorded_in_report_json(tmp_path: Path) -> None:
    """report.json's environment.command carries the CLI's command line (null in-process)."""
    from compiler.config import CompileConfig
    from compiler.pipeline import compile_model

    config = CompileConfig(
        model="digits_cnn", out_dir=tmp_path / "o", threads=1, reports=("json",), eval_samples=32
    )
    line = "edgec compile digits_cnn --out o"
    result = compile_model(config, command=line)
    assert result.report["environment"]["command"] == line
    assert (
        json.loads((tmp_path / "o" / "report.json").read_text())["environment"]["command"] == line
    )


def test_overflowing_layers_listed_with_their_remedy() -> None:
    report = _report()
    report["quantization"] = {
        **report["quantization"],
        "overflow": {
            "probed_layers": 3,
            "samples": 16,
            "threshold_steps2": 0.01,
            "overflowing": ["/block1/Conv", "/block2/Conv"],
            "seven_bit_channels": {"/block1/Conv": 12},
            "uint8_weights": ["/block2/Conv"],
            "worst": {"/block1/Conv": 5.5, "/block2/Conv": 0.02},
            "overflowing_steps2": {"/block1/Conv": 5.5, "/block2/Conv": 0.02},
        },
    }
    page = _html(report)
    q = _section(page, "quantization")
    assert "2 of 3 layers" in q
    assert "<td>/block1/Conv</td>" in q and "7-bit weights (12 channels)" in q
    assert "uint8 weights" in q
    assert "2 of 3 layers overflow int16" in page  # the summary line too
    both = _report()
    both["quantization"] = {
        **report["quantization"],
        "overflow": {
            **report["quantization"]["overflow"],
            "uint8_weights": ["/block1/Conv", "/block2/Conv"],
            "seven_bit_channels": {"/block1/Conv": 5},
        },
    }
    # 7-bit channels that still overflowed when measured again: both remedies, said so
    assert "7-bit weights (5 channels) + uint8 weights" in _section(_html(both), "quantization")
    plain = _section(_html(_report()), "quantization")  # no overflow: no table
    assert "overflow on this CPU" not in plain
