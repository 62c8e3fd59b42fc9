"""Q/DQ structure per target flavour, INT8 storage, and the accuracy bound on a real model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from compiler.sources import resolve
from compiler.stages.optimize import optimize
from passes.errors import PassInputError
from passes.quantize import CPU_SPEC, TENSORRT_SPEC, PtqOptions, count_qdq, quantize


@pytest.fixture(scope="module")
def digits() -> tuple[ir.Model, object]:
    src = resolve("digits_cnn")
    model, _ = optimize(ir.from_proto(src.proto))
    return model, src.zoo_spec


def _quantized(digits: tuple[ir.Model, object], spec: object) -> onnx.ModelProto:
    return _quantized_with_summary(digits, spec)[0]


def _quantized_with_summary(digits: tuple[ir.Model, object], spec: object):  # type: ignore[no-untyped-def]
    model, zoo = digits
    q, summary = quantize(model, zoo.calibration_data(128), PtqOptions(samples=128), spec=spec)  # type: ignore[attr-defined]
    return ir.to_proto(q), summary


def _inits(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


@pytest.mark.parametrize("spec", [CPU_SPEC, TENSORRT_SPEC], ids=["cpu", "tensorrt"])
def test_weighted_ops_get_int8_weights_and_input_qdq(digits, spec) -> None:
    proto, summary = _quantized_with_summary(digits, spec)
    counts = count_qdq(ir.from_proto(proto))
    n_conv = sum(n.op_type == "Conv" for n in proto.graph.node)
    n_gemm = sum(n.op_type == "Gemm" for n in proto.graph.node)
    # the stem Conv (reading the image) computes in float; its weight is int8 all the same
    assert summary.kept_float == [next(n.name for n in proto.graph.node if n.op_type == "Conv")]
    assert counts["Conv"]["weight"] == n_conv >= 2
    assert counts["Conv"]["input"] == n_conv - 1
    assert counts["Gemm"]["weight"] == n_gemm == 1
    inits = _inits(proto)
    # every weight feeding a DequantizeLinear is stored as INT8: the artifact really shrinks
    dq_weight_inputs = [
        n.input[0]
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert dq_weight_inputs and all(inits[w].dtype in (np.int8, np.int32) for w in dq_weight_inputs)
    float_bytes = sum(a.nbytes for a in inits.values() if a.dtype == np.float32)
    int_bytes = sum(a.nbytes for a in inits.values() if a.dtype == np.int8)
    assert int_bytes > float_bytes  # weights dominate and are int8


def test_tensorrt_flavour_is_symmetric_with_zero_points_zero(digits) -> None:
    proto = _quantized(digits, TENSORRT_SPEC)
    inits = _inits(proto)
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in proto.graph.node
        if n.op_type == "Constant"
    }
    values = {**inits, **consts}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zp = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        assert zp is None or (zp.dtype == np.int8 and not zp.any()), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w = inits[node.input[0]]
            scale = values[node.input[1]]
            if (
                scale.size > 1
            ):  # per-channel weights: one scale per output channel (axis 0 for Conv)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                assert scale.size == w.shape[axis]
    # no activation is uint8 in the TensorRT flavour
    assert not any(a.dtype == np.uint8 for a in values.values())


def test_cpu_flavour_uses_uint8_activations(digits) -> None:
    proto = _quantized(digits, CPU_SPEC)
    values = _inits(proto)
    zps = [
        values[n.input[2]]
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in values
    ]
    assert zps and all(z.dtype == np.uint8 for z in zps)


def test_already_quantized_model_is_refused(digits) -> None:
    q = ir.from_proto(_quantized(digits, CPU_SPEC))
    with pytest.raises(PassInputError, match="already quantized"):
        quantize(q, digits[1].calibration_data(16), spec=CPU_SPEC)  # type: ignore[attr-defined]
