"""The frozen flavours, and sensitivity-driven fallback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, TENSORRT_SPEC, InsertQdqPass, QuantSpec, spec_by_name
from passes.quantize.calibrate import collect_stats
from passes.quantize.plan import plan_quantization
from passes.quantize.sensitivity import Evaluator, auto_fallback, layer_sensitivity, score
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
