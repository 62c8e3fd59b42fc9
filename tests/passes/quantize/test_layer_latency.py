"""The per-layer latency cost model (`layer_latency.py`): trace names map to layers, and
a profiled small model gives every layer an int8 and a float time.

No timing is asserted (the machine is shared): only that each layer is named, times
are positive, and the additive prediction is what it says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, InsertQdqPass
from passes.quantize.calibrate import collect_stats
from passes.quantize.layer_latency import (
    WARMUP_CALLS,
    LatencyCosts,
    LayerCost,
    _boundaries,
    _keys,
    _per_layer,
    _read_trace,
    latency_ratios,
    layer_costs,
    one_call_feeds,
)
from passes.quantize.plan import QuantPlan, plan_quantization
from tests.passes.quantize import _models


def _block() -> tuple[ir.Model, Callable[[frozenset[str]], ir.Model], QuantPlan, np.ndarray]:
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(16)
    plan = plan_quantization(model.graph, CPU_SPEC)
    ranges = collect_stats(model, plan.calibrated, [{"x": x}]).ranges("percentile", percentile=99.0)

    def build(kept: frozenset[str]) -> ir.Model:
        q = graph_tools.clone(model)
        InsertQdqPass(CPU_SPEC, ranges, exclude=kept)(q)
        return q

    return model, build, plan, x


def test_trace_names_map_to_layers(tmp_path: Path) -> None:
    """QDQ fusion names a fused int8 node `<node>_token_<n>`; the NCHWc transformer names
    a float conv after its last fused output (`<output>_nchwc`, through Relu/Clip/Add)."""
    model = _models.block_model()
    keys = _keys(model.graph, ["Conv_0", "Conv_2", "Conv_4", "Gemm_8"])
    # Conv_0 -> Relu_1 (r1 has two readers: the chain stops there)
    assert keys["Conv_0"] == keys["c1"] == keys["Relu_1"] == keys["r1"] == "Conv_0"
    assert keys["r2"] == "Conv_2"  # Conv → Clip
    assert keys["s"] == "Conv_4"  # Conv → Add (residual): fused as the conv's sum input
    events = [
        {"cat": "Node", "name": f"{n}_kernel_time", "dur": d, "args": {"op_name": op}}
        for n, d, op in [
            ("Conv_0_token_3", 10, "QLinearConv"),
            ("Conv_0_token_3", 30, "QLinearConv"),
            ("r2_nchwc", 7, "Conv"),
            ("s_nchwc", 5, "Conv"),
            ("Gemm_8", 4, "Gemm"),
            ("Transpose", 99, "Transpose"),
        ]
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events))
    per_layer, _ = _per_layer(_read_trace(str(path)), keys)
    assert per_layer == {"Conv_0": 20.0, "Conv_2": 7.0, "Conv_4": 5.0, "Gemm_8": 4.0}


def test_costs_of_a_small_model() -> None:
    model, build, plan, x = _block()
    layers = list(plan.nodes)
    feeds = one_call_feeds(model, {"x": x})
    assert feeds["x"].shape == (1, 3, 8, 8)  # batch 1: the dynamic batch of one deployed call
    costs = layer_costs(model, build, layers, feeds, threads=1, rounds=2, block=2)
    assert set(costs.layers) == set(layers)
    convs = [n for n in layers if n.startswith(("Conv", "Gemm"))]
    assert not set(convs) & set(costs.estimated)  # every weighted layer named by the traces
    for n in convs:
        c = costs.layers[n]
        assert c.int8_ms > 0 and c.float_ms > 0 and c.boundary_ms >= 0
        assert c.cost_ms == pytest.approx(c.float_ms + c.boundary_ms + c.overhead_ms - c.int8_ms)
    assert costs.fp32_ms > 0 and costs.int8_ratio > 0 and costs.calls == 2 * 3 + WARMUP_CALLS
    # each island model (every other layer float) is timed whole against the prediction
    assert set(costs.checks) == {"even", "odd"}
    assert all(min(check) > 0 for check in costs.checks.values())
    # what the kernels miss is fitted per island and charged to every layer alike
    assert costs.island_overhead_ms >= 0
    assert all(c.overhead_ms == costs.island_overhead_ms for c in costs.layers.values())
    assert costs.predicted_ratio(layers) == pytest.approx(
        costs.int8_ratio + sum(costs.ratio(n) for n in layers)
    )


def test_boundary_and_prediction_arithmetic() -> None:
    costs = LatencyCosts(
        fp32_ms=2.0,
        int8_ratio=0.5,
        layers={"a": LayerCost(0.2, 0.3, 0.1), "b": LayerCost(0.4, 0.3, 0.0)},
        calls=10,
    )
    assert costs.layers["a"].cost_ms == pytest.approx(0.2)
    assert costs.layers["b"].cost_ms == pytest.approx(-0.1)  # float is faster here
    assert costs.ratio("a") == pytest.approx(0.1)
    assert costs.predicted_ratio(["a", "unknown"]) == pytest.approx(0.6)


def test_one_call_feeds_keeps_a_fixed_batch() -> None:
    model = _models.block_model()
    model.graph.inputs[0].shape = ir.Shape([4, 3, 8, 8])
    feeds = one_call_feeds(model, {"x": np.zeros((8, 3, 8, 8), np.float32)})
    assert feeds["x"].shape == (4, 3, 8, 8)


def test_boundary_kernels_are_charged_to_the_nearest_float_layer(tmp_path: Path) -> None:
    """In an island trace the layout and Q/DQ kernels around a float layer are its cost;
    they carry generic names (`Transpose_token_9`), so execution order decides."""
    model = _models.block_model()
    keys = _keys(model.graph, ["Conv_0", "Conv_2", "Conv_4", "Gemm_8"])
    ran = [
        ("Conv_0_token_1", 10, "QLinearConv"),
        ("r1_DequantizeLinear", 3, "DequantizeLinear"),
        ("ReorderInput", 4, "ReorderInput"),
        ("r2_nchwc", 7, "Conv"),  # Conv_2, float
        ("ReorderOutput_token_2", 5, "ReorderOutput"),
        ("r2_QuantizeLinear", 2, "QuantizeLinear"),
        ("Conv_4_token_3", 6, "QLinearConv"),
        ("Transpose_token_9", 1, "Transpose"),
        ("Gemm_8", 8, "Gemm"),  # float
    ]
    events = [
        {"cat": "Node", "name": f"{n}_kernel_time", "dur": d, "args": {"op_name": op}}
        for n, d, op in ran
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events))
    trace = _read_trace(str(path))
    assert trace.order == [n for n, _, _ in ran]
    assert _boundaries(trace, keys, {"Conv_2", "Gemm_8"}) == {"Conv_2": 14.0, "Gemm_8": 1.0}
    assert _boundaries(trace, keys, set()) == {}


def test_latency_ratios_time_whole_models_against_a_baseline() -> None:
    """Plain sessions (no profiler), paired blocks: the baseline is 1 by definition, and
    every model gets a positive ratio and the baseline a positive time."""
    model, build, plan, x = _block()
    feeds = one_call_feeds(model, {"x": x})
    models = {"fp32": model, "int8": build(frozenset()), "island": build(frozenset(plan.nodes))}
    fp32_ms, ratios = latency_ratios(models, feeds, baseline="fp32", threads=1, rounds=2, block=2)
    assert fp32_ms > 0 and set(ratios) == set(models)
    assert ratios["fp32"] == 1.0 and ratios["int8"] > 0 and ratios["island"] > 0


def test_fallback_returns_layers_to_int8_until_its_measured_latency_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every prefix of the chosen layers is timed whole in one run; the longest that
    measures within the bound (all-INT8's ratio plus 20% of its saving) by two standard
    errors of its cost is kept, the
    layers after it go back to int8. The timer is replaced by a table here so the
    decision, not the machine, is under test (the timer itself: the test above)."""
    from types import SimpleNamespace

    from passes.quantize import steps
    from passes.quantize.options import PtqOptions

    model, _, _, x = _block()

    def build(m: ir.Model, excluded: frozenset[str]) -> ir.Model:
        tagged = graph_tools.clone(m)
        tagged.doc_string = ",".join(sorted(excluded))  # which layers this copy keeps float
        return tagged

    spread = {"kept_2": 0.0}  # one prefix's round-to-round spread (noise)

    def table(models: dict[str, ir.Model], *_: object, **__: object) -> tuple[float, dict]:
        def ratio(m: ir.Model) -> float:
            return 0.5 + 0.04 * len([n for n in (m.doc_string or "").split(",") if n])

        def rounds(tag: str, m: ir.Model) -> list[float]:
            r = 1.0 if tag == "fp32" else ratio(m)
            d = spread.get(tag, 0.0)
            return [r - d, r + d] * 5 + [r]  # median r, per-round ratios +-d

        return 5.0, {tag: rounds(tag, m) for tag, m in models.items()}

    monkeypatch.setattr(steps, "latency_ratio_rounds", table)
    state = SimpleNamespace(
        options=PtqOptions(min_agreement=0.9),
        model=model,
        stream=SimpleNamespace(take=lambda n: [{"x": x[:n]}]),
        build=build,
        excluded=frozenset(),
    )
    kept, measured = steps._measured_within_bound(state, ["a", "b", "c", "d"])  # type: ignore[arg-type]
    # bound 0.5 + 0.2 * 0.5 = 0.6: two layers (0.58) fit, three (0.62) do not
    assert kept == ["a", "b"]
    assert measured["returned_to_int8"] == ["d", "c"]
    assert measured["latency_ratio"] == pytest.approx(0.58)
    assert measured["latency_bound_ratio"] == pytest.approx(0.6)
    assert measured["int8_latency_ratio"] == 0.5 and measured["fp32_ms"] == 5.0
    assert measured["latency_error"] == 0.0
    # the same median with a spread that 2 standard errors carry over the bound: one layer
    spread["kept_2"] = 0.05
    kept, measured = steps._measured_within_bound(state, ["a", "b", "c", "d"])  # type: ignore[arg-type]
    assert kept == ["a"] and measured["returned_to_int8"] == ["d", "c", "b"]
    spread["kept_2"] = 0.0
    # within the bound at once: nothing returned
    kept, measured = steps._measured_within_bound(state, ["a"])  # type: ignore[arg-type]
    assert kept == ["a"] and measured["returned_to_int8"] == []
    # a long choice times at most MAX_TIMED_PREFIXES prefixes (1, 2, ... the whole one)
    timed: list[int] = []

    def counting(models: dict[str, ir.Model], *a: object, **k: object) -> tuple[float, dict]:
        timed.append(len(models))
        return table(models)

    monkeypatch.setattr(steps, "latency_ratio_rounds", counting)
    layers = [f"l{i}" for i in range(20)]
    kept, measured = steps._measured_within_bound(state, layers)  # type: ignore[arg-type]
    assert 2 < timed[0] <= 2 + steps.MAX_TIMED_PREFIXES
    assert kept == layers[:2]  # 0.58: the longest timed prefix within 0.6 (3 layers: 0.62)
