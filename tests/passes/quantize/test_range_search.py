"""Output-aware range search, and the helpers the floor-free sensitivity analysis uses."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, TENSORRT_SPEC, InsertQdqPass
from passes.quantize.bias_correction import copy_biases
from passes.quantize.calibrate import collect_stats
from passes.quantize.fold import int8_weight
from passes.quantize.params import activation_qparams
from passes.quantize.plan import plan_quantization
from passes.quantize.range_search import _judges, candidates, search_ranges
from tests.passes.quantize import _models

# Depthwise conv → Clip(0, 6) → 1x1 conv: the Clip output has one channel that is
# rarely large but carries a weight 20x the others' in the next layer (the
# MobileNetV2 case the search exists for).
OUTLIER = f"""{_models.HEADER}
outlier (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y) {{
  c1 = Conv <group = 8, pads = [1, 1, 1, 1]> (x, w1, b1)
  r1 = Clip (c1, lo, hi)
  y = Conv (r1, w2, b2)
}}"""


def _outlier_model() -> tuple[ir.Model, np.ndarray]:
    rng = np.random.default_rng(0)
    f = np.float32
    gains = np.full(8, 0.1, f)
    gains[3] = 1.0
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.1).astype(f)
    w2[:, 3] *= 20
    weights = {
        "w1": (rng.standard_normal((8, 1, 3, 3)) * gains[:, None, None, None]).astype(f),
        "b1": np.zeros(8, f),
        "lo": np.array(0.0, f),
        "hi": np.array(6.0, f),
        "w2": w2,
        "b2": np.zeros(4, f),
    }
    x = rng.standard_normal((48, 8, 6, 6)).astype(f)
    x[:, 3] *= (rng.random(48) < 0.15)[:, None, None] * 2.0  # channel 3: rare and large
    return _models.from_text(OUTLIER, weights), x


def test_candidates_span_the_calibrated_range_to_the_extremes() -> None:
    c = candidates((-1.0, 2.0), (-3.0, 5.0), (-np.inf, np.inf), symmetric=False)
    assert (-1.0, 2.0) in c and (-3.0, 5.0) in c
    assert min(hi for _, hi in c) == pytest.approx(1.2)  # 40% inside
    bounded = candidates((0.0, 2.0), (0.0, 9.0), (0.0, 6.0), symmetric=False)
    assert max(hi for _, hi in bounded) == 6.0 and all(lo == 0.0 for lo, _ in bounded)
    sym = candidates((-1.0, 2.0), (-3.0, 5.0), (-np.inf, np.inf), symmetric=True)
    assert all(lo == -hi for lo, hi in sym)


def test_search_keeps_the_outlier_channel_that_percentile_clips() -> None:
    model, x = _outlier_model()
    graph_tools.ensure_types(model)
    feeds = [{"x": x[i : i + 8]} for i in range(0, 32, 8)]
    plan = plan_quantization(model.graph, CPU_SPEC)
    result = collect_stats(model, plan.calibrated, feeds)
    base = result.ranges("percentile", percentile=99.0)
    searched = search_ranges(model, plan, CPU_SPEC, base, result.stats, feeds, threads=1)
    assert searched["r1"][1] > base["r1"][1]

    def error(ranges: dict[str, tuple[float, float]]) -> float:
        q = graph_tools.clone(model)
        InsertQdqPass(CPU_SPEC, ranges)(q)
        held_out = {"x": x[32:]}
        return _models.sqnr_db(_models.run(model, held_out), _models.run(q, held_out))

    # judged on samples the search did not see, through onnxruntime
    assert error(searched) > error(base) + 3.0


def test_search_leaves_the_residual_stream_alone() -> None:
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(16)
    feeds = [{"x": x}]
    plan = plan_quantization(model.graph, CPU_SPEC)
    result = collect_stats(model, plan.calibrated, feeds)
    base = result.ranges("percentile", percentile=99.0)
    searched = search_ranges(model, plan, CPU_SPEC, base, result.stats, feeds, threads=1)
    assert searched["s"] == base["s"]  # an Add output
    assert set(searched) == set(base)


def test_search_symmetric_flavour_stays_symmetric() -> None:
    model, x = _outlier_model()
    graph_tools.ensure_types(model)
    feeds = [{"x": x[:16]}]
    plan = plan_quantization(model.graph, TENSORRT_SPEC)
    result = collect_stats(model, plan.calibrated, feeds)
    base = result.ranges("percentile", percentile=99.0, symmetric=True)
    searched = search_ranges(model, plan, TENSORRT_SPEC, base, result.stats, feeds, threads=1)
    scale, zero = activation_qparams(*searched["r1"], TENSORRT_SPEC)
    base_scale, _ = activation_qparams(*base["r1"], TENSORRT_SPEC)
    assert zero == 0 and scale > base_scale


def test_excluded_weights_can_stay_float() -> None:
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(8)
    plan = plan_quantization(model.graph, CPU_SPEC)
    ranges = collect_stats(model, plan.calibrated, [{"x": x}]).ranges("minmax")
    conv = "Conv_2"  # the depthwise Conv
    others = frozenset(n for n in plan.nodes if n != conv)
    q = graph_tools.clone(model)
    InsertQdqPass(CPU_SPEC, ranges, exclude=others, excluded_weights=False)(q)
    # (either stored form: Conv_2 alone writes float, so its weight is folded, fold.py)
    readers = {
        n.name
        for n in q.graph
        if n.op_type in ("Conv", "Gemm") and int8_weight(n.inputs[1]) is not None
    }
    assert readers == {conv}


def test_copy_biases_moves_only_the_named_nodes() -> None:
    a, b = _models.block_model(0), _models.block_model(1)
    copy_biases(a, b, {"Conv_0"})
    bias = {n.name: graph_tools.constant(n.inputs[2]) for n in b.graph if n.op_type == "Conv"}
    source = {n.name: graph_tools.constant(n.inputs[2]) for n in a.graph if n.op_type == "Conv"}
    original = {
        n.name: graph_tools.constant(n.inputs[2])
        for n in _models.block_model(1).graph
        if n.op_type == "Conv"
    }
    np.testing.assert_array_equal(bias["Conv_0"], source["Conv_0"])
    np.testing.assert_array_equal(bias["Conv_2"], original["Conv_2"])


# Conv -> SiLU (x * Sigmoid(x), EfficientNet's activation) -> Conv: the SiLU input is read
# by a Sigmoid and a Mul, not by a linear op; its range is judged at the SiLU's output.
SWISH = f"""{_models.HEADER}
swish (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y) {{
  c1 = Conv <group = 8, pads = [1, 1, 1, 1]> (x, w1, b1)
  g = Sigmoid (c1)
  s = Mul (c1, g)
  y = Conv (s, w2, b2)
}}"""


def test_search_judges_a_silu_input_at_the_silu_output() -> None:
    model, x = _outlier_model()
    weights = {
        i.name: np.asarray(i.const_value.numpy())
        for i in model.graph.initializers.values()
        if i.name in ("w1", "b1", "w2", "b2") and i.const_value is not None
    }
    model = _models.from_text(SWISH, weights)
    graph_tools.ensure_types(model)
    spec = CPU_SPEC.replace(float_stem=False)  # c1 reads the graph input
    plan = plan_quantization(model.graph, spec)
    assert {n.op_type for n, _ in plan.activations["c1"].edges} == {"Sigmoid", "Mul"}
    assert len(_judges(plan.activations["c1"].edges)) == 1  # one SiLU, not two readers
    feeds = [{"x": x[i : i + 8]} for i in range(0, 32, 8)]
    result = collect_stats(model, plan.calibrated, feeds)
    base = result.ranges("percentile", percentile=99.0)
    searched = search_ranges(model, plan, spec, base, result.stats, feeds, threads=1)
    assert searched["c1"][1] > base["c1"][1]  # before: not searched, kept the percentile

    def error(ranges: dict[str, tuple[float, float]]) -> float:
        q = graph_tools.clone(model)
        InsertQdqPass(spec, ranges)(q)
        held_out = {"x": x[32:]}
        return _models.sqnr_db(_models.run(model, held_out), _models.run(q, held_out))

    assert error(searched) > error(base) + 3.0  # measured: 0.5 dB -> 22.2 dB


def test_a_batch_past_the_element_budget_is_judged_on_samples_spread_over_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The budget keeps every k-th sample of a large batch: the sums equal those of
    that subset judged whole, and a small batch is judged whole."""
    from passes.quantize import range_search

    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
    cands = candidates((-1.5, 1.5), (float(x.min()), float(x.max())), (-np.inf, np.inf), False)

    def sums(batch: np.ndarray) -> tuple[np.ndarray, int]:
        judge = range_search._Errors(cands, [lambda t, e: e], CPU_SPEC)
        judge.update(batch)
        return judge.sums, judge.elements

    monkeypatch.setattr(range_search, "MAX_BATCH_ELEMENTS", 2 * x[0].size)
    budgeted, elements = sums(x)
    assert elements == 2 * x[0].size
    monkeypatch.setattr(range_search, "MAX_BATCH_ELEMENTS", 1 << 20)
    subset, _ = sums(x[::4])
    np.testing.assert_allclose(budgeted, subset, rtol=1e-6)
    whole, elements = sums(x)
    assert elements == x.size and not np.allclose(whole, subset)
