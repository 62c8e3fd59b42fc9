"""The frozen flavours, and sensitivity-driven fallback."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import numpy as np
import onnx_ir as ir
import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, TENSORRT_SPEC, InsertQdqPass, QuantSpec, spec_by_name
from passes.quantize.calibrate import collect_stats
from passes.quantize.plan import plan_quantization
from passes.quantize.sensitivity import (
    Evaluator,
    Score,
    auto_fallback,
    budgeted_fallback,
    fallback_order,
    layer_sensitivity,
    score,
)
from tests.passes.quantize import _models


def test_flavours() -> None:
    assert CPU_SPEC.activation_qrange == (0, 255) and not CPU_SPEC.activation_symmetric
    assert TENSORRT_SPEC.activation_qrange == (-127, 127) and TENSORRT_SPEC.activation_symmetric
    assert not TENSORRT_SPEC.bias_int32 and not TENSORRT_SPEC.output_ops
    assert TENSORRT_SPEC.weight_axis("Conv") == 0
    assert TENSORRT_SPEC.weight_axis("ConvTranspose") == 1
    assert TENSORRT_SPEC.weight_axis("Gemm", trans_b=True) == 0
    assert TENSORRT_SPEC.weight_axis("Gemm", trans_b=False) == 1
    assert TENSORRT_SPEC.weight_axis("MatMul", rank=3) == 2
    assert spec_by_name("tensorrt") is TENSORRT_SPEC
    with pytest.raises(dataclasses.FrozenInstanceError):
        CPU_SPEC.activation_dtype = "int8"  # type: ignore[misc]
    with pytest.raises(ValueError, match="activation_dtype"):
        QuantSpec(name="x", activation_dtype="int4")
    assert CPU_SPEC.to_dict()["fused_activations"] == ["Clip", "Relu"]
    assert CPU_SPEC.replace(reduce_range=True).weight_qmax == 63


def test_score() -> None:
    ref = [np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)]
    s = score(ref, [ref[0] + 0.1])
    assert s.agreement == 1.0 and s.sqnr_db == pytest.approx(10 * np.log10(14 / 0.04))


def test_sensitivity_and_auto_fallback() -> None:
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(32)
    feeds = [{"x": x[:16]}, {"x": x[16:]}]
    plan = plan_quantization(model.graph, CPU_SPEC)
    ranges = collect_stats(model, plan.calibrated, feeds).ranges("percentile", percentile=99.0)

    def build(m, exclude):  # type: ignore[no-untyped-def]
        q = graph_tools.clone(m)
        InsertQdqPass(CPU_SPEC, ranges, exclude=exclude)(q)
        return q

    evaluator = Evaluator(model, feeds)
    sens = layer_sensitivity(model, build, plan.nodes, evaluator)
    assert set(sens) == set(plan.nodes)
    assert all(s.sqnr_db > 10 for s in sens.values())
    full = evaluator(build(model, frozenset()))
    kept, final = auto_fallback(model, build, sens, evaluator, min_sqnr_db=full.sqnr_db + 3)
    assert kept and kept[0] == min(sens, key=lambda n: sens[n].sqnr_db)
    assert final.sqnr_db >= full.sqnr_db + 3 or len(kept) == len(sens)
    # a budget already met keeps everything int8
    assert auto_fallback(model, build, sens, evaluator, min_sqnr_db=0.0)[0] == []


# The budgeted choice on constructed gains and costs: a "model" is the set of layers kept
# float, and its noise is the sum of the gains of the layers still int8 (noise adds up).
GAINS = {"a": 0.02, "b": 0.008, "c": 0.001, "d": 0.004}
COSTS = {"a": 0.10, "b": 0.01, "c": -0.002, "d": 0.02}  # fractions of FP32 latency


NO_MODEL = cast(ir.Model, None)  # the fake quantizer never reads the model


def _fake(gains: dict[str, float]) -> tuple[Any, Any, dict[str, Score]]:
    def quantize(_model: object, exclude: frozenset[str]) -> frozenset[str]:
        return frozenset(exclude)

    def evaluator(kept: frozenset[str]) -> Score:
        noise = sum(g for n, g in gains.items() if n not in kept)
        return Score(float("inf") if noise == 0 else -10 * np.log10(noise), 1.0 - noise)

    sens = {n: Score(-10 * np.log10(g), 1.0 - g) for n, g in gains.items()}
    return quantize, evaluator, sens


def _db(noise: float) -> float:
    return float(-10 * np.log10(noise))


def test_fallback_prefers_gain_per_latency_cost() -> None:
    quantize, evaluator, sens = _fake(GAINS)
    # free layers first (c: float is faster), then by gain / cost: b 0.8, d 0.2, a 0.2
    assert fallback_order(sens, COSTS) == ["c", "b", "a", "d"]
    assert fallback_order(sens) == ["a", "b", "d", "c"]  # no costs: most sensitive first
    # enough accuracy once the noise is below a's + d's: c and b are the cheap way there
    result = budgeted_fallback(
        NO_MODEL, quantize, sens, evaluator, min_sqnr_db=_db(0.0245), costs=COSTS, budget=0.05
    )
    assert result.kept == ["c", "b"] and result.met and result.limited_by is None
    assert result.spent == pytest.approx(0.01)  # c's negative cost is not counted as credit
    # the old order (by sensitivity alone) would have paid a's 0.10 for the same budget
    kept, _ = auto_fallback(NO_MODEL, quantize, sens, evaluator, min_sqnr_db=_db(0.0245))
    assert kept == ["a"]
    trades = {t.layer: t for t in result.trades}
    assert [t.layer for t in result.trades] == ["c", "b", "a", "d"]
    assert trades["b"].kept_float and not trades["a"].kept_float
    assert trades["a"].cost == 0.10 and trades["a"].gain == pytest.approx(0.02)


def test_fallback_respects_the_latency_bound_and_says_when_accuracy_is_not_met() -> None:
    quantize, evaluator, sens = _fake(GAINS)
    # only all four float meets this budget; 0.035 of latency cannot pay for a (0.10)
    result = budgeted_fallback(
        NO_MODEL, quantize, sens, evaluator, min_sqnr_db=_db(0.0005), costs=COSTS, budget=0.035
    )
    assert not result.met and result.limited_by == "latency"
    assert "a" not in result.kept and set(result.kept) == {"c", "b", "d"}
    assert result.spent <= 0.035 + 1e-12
    assert sum(max(COSTS[n], 0) for n in result.kept) <= 0.035 + 1e-12
    # the best model within the bound: every affordable layer is float
    assert result.score.sqnr_db == pytest.approx(_db(GAINS["a"]))
    # a zero budget allows only free layers
    free = budgeted_fallback(
        NO_MODEL, quantize, sens, evaluator, min_sqnr_db=_db(0.0005), costs=COSTS, budget=0.0
    )
    assert free.kept == ["c"] and free.limited_by == "latency"
    # max_layers stops it first when it is the tighter bound
    capped = budgeted_fallback(
        NO_MODEL, quantize, sens, evaluator, min_sqnr_db=100.0, costs=COSTS, max_layers=1
    )
    assert capped.kept == ["c"] and capped.limited_by == "max_layers"


def test_fallback_warning_line() -> None:
    from compiler.sanity import fallback_warnings

    section = {
        "fallback": {
            "accuracy_met": False,
            "limited_by": "latency",
            "agreement": 0.91,
            "min_agreement": 0.97,
            "latency_bound_ratio": 0.6,
            "int8_latency_ratio": 0.5,
        },
        "fallback_trade": [{"layer": "a", "kept_float": True}, {"layer": "b", "kept_float": False}],
    }
    (line,) = fallback_warnings(section)
    assert "kept 1 layer(s) in float" in line and "0.91" in line and "0.97" in line
    assert "latency bound (0.6x FP32" in line and "--fallback-speedup-kept" in line
    with_sqnr = {**section["fallback"], "sqnr_db": 24.25, "min_sqnr_db": 25.0}  # type: ignore[dict-item]
    (line,) = fallback_warnings({**section, "fallback": with_sqnr})
    assert "top-1 agreement 0.91 (budget 0.97) and SQNR 24.25 dB (budget 25.0 dB)" in line
    section["fallback"] = {  # met by the choice, lost by the biases corrected again
        **section["fallback"],  # type: ignore[dict-item]
        "limited_by": "bias_correction",
        "choice_agreement": 1.0,
    }
    (line,) = fallback_warnings(section)
    assert "the choice reached agreement 1.0" in line and "corrected again" in line
    section["fallback"]["accuracy_met"] = True  # type: ignore[index]
    assert fallback_warnings(section) == []
    assert fallback_warnings({"fallback": None}) == [] and fallback_warnings(None) == []
