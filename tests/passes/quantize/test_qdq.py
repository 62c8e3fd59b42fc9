"""InsertQdqPass: Q/DQ placement per flavour, int8 storage, idempotence, numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, TENSORRT_SPEC, InsertQdqPass, count_qdq
from passes.quantize.dynamic import saturating_cpu
from passes.quantize.fold import int8_weight
from passes.quantize.overflow import guard, store_uint8
from passes.quantize.plan import plan_quantization
from tests.passes.quantize import _models

# the flavours' Q/DQ rules without the float stem (tested on its own below)
CPU = CPU_SPEC.replace(float_stem=False)
TRT = TENSORRT_SPEC.replace(float_stem=False)


def _ranges(model: ir.Model, spec, x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min/max ranges from a direct run (the calibrators have their own tests)."""
    graph_tools.ensure_types(model)
    plan = plan_quantization(model.graph, spec)
    names = plan.calibrated
    sess = graph_tools.ort_session(graph_tools.model_bytes(model, names))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    outs["x"] = x
    return {n: (float(outs[n].min()), float(outs[n].max())) for n in names}


def _quantized(spec, model=None, exclude=()):  # type: ignore[no-untyped-def]
    model = model or _models.block_model()
    x = _models.images(16)
    ranges = _ranges(model, spec, x)
    q = graph_tools.clone(model)
    result = InsertQdqPass(spec, ranges, exclude=set(exclude))(q)
    assert result.modified
    onnx.checker.check_model(ir.to_proto(q), full_check=True)
    return model, q, x


def test_cpu_flavour_counts_per_op_type() -> None:
    _, q, _ = _quantized(CPU)
    counts = count_qdq(q)
    # every Conv: activation input, int8 weight, int32 bias, quantized output (after Relu/Clip)
    assert counts["Conv"] == {"bias": 3, "input": 3, "nodes": 3, "output": 3, "weight": 3}
    assert counts["Add"] == {"input": 2, "nodes": 1, "output": 1}
    assert counts["GlobalAveragePool"] == {"input": 1, "nodes": 1, "output": 1}
    # the logits stay float: QGemm writes float
    assert counts["Gemm"] == {"bias": 1, "input": 1, "nodes": 1, "weight": 1}
    # x, r1, r2, c3, s, p, f: 7 activation pairs; 4 weights + 4 biases
    assert counts["QuantizeLinear"] == {"nodes": 7}
    assert counts["DequantizeLinear"] == {"nodes": 7 + 4 + 4}


def test_cpu_flavour_uses_u8_activations_s8_weights_and_bounds_clip() -> None:
    _, q, _ = _quantized(CPU)
    inits = q.graph.initializers
    for node in q.graph:
        if node.op_type == "QuantizeLinear":
            assert inits[node.inputs[2].name].const_value.numpy().dtype == np.uint8
            if node.inputs[0].name == "r2":  # Clip(0, 6): the range lies inside [0, 6]
                scale = inits[node.inputs[1].name].const_value.numpy()
                zp = inits[node.inputs[2].name].const_value.numpy()
                assert zp == 0 and np.float32(255) * scale <= np.float32(6.0)
        if node.op_type == "DequantizeLinear" and node.inputs[0].is_initializer():
            arr = inits[node.inputs[0].name].const_value.numpy()
            assert arr.dtype in (np.int8, np.int32)


def test_cpu_flavour_fuses_into_integer_kernels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, q, _ = _quantized(CPU)
    ops = _models.optimized_ops(q, tmp_path, level="ORT_ENABLE_ALL")
    assert ops.count("QLinearConv") == 3
    assert "QLinearAdd" in ops and "QLinearGlobalAveragePool" in ops and "QGemm" in ops
    assert "Conv" not in ops and "Clip" not in ops and "Relu" not in ops


def test_chained_adds_keep_a_float_skip_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, q, x = _quantized(CPU.replace(float_skip=True), _models.stream_model())
    adds = {n.outputs[0].name: n for n in q.graph if n.op_type == "Add"}
    # s2 reads the stream s1 itself; the Conv after it reads its quantized copy
    assert adds["s2"].inputs[1].name == "s1"
    readers = [u.node for u in adds["s1"].outputs[0].uses()]
    assert sorted(r.op_type for r in readers) == ["Add", "QuantizeLinear"]
    # both Adds read the Convs' quantized outputs and add in float; every Conv stays integer
    assert all(v.producer().op_type == "DequantizeLinear" for v in adds["s1"].inputs)
    ops = _models.optimized_ops(q, tmp_path)
    assert ops.count("Add") == 2 and "QLinearAdd" not in ops and ops.count("QLinearConv") == 4
    ref = _models.run(model, {"x": x})
    # on x86 without VNNI the u8s8 kernels overflow here (10.4 dB): the guard finds the
    # layers and stores their weights as uint8, the same values (overflow.py)
    check = guard(q, [{"x": x}])
    assert bool(check.overflowing) == saturating_cpu()
    store_uint8(q, check.overflowing)
    sqnr = _models.sqnr_db(ref, _models.run(q, {"x": x}, optimize=True))
    assert sqnr > 25
    # without float_skip (the CPU spec's rule) the stream is requantized after each Add
    assert not CPU.float_skip
    _, q_old, _ = _quantized(CPU, _models.stream_model())
    assert _models.optimized_ops(q_old, tmp_path).count("QLinearAdd") == 2


def test_tensorrt_flavour_rules() -> None:
    _, q, _ = _quantized(TRT)
    counts = count_qdq(q)
    # inputs of weighted ops and the residual input of Add; no outputs of their own
    assert counts["Conv"]["input"] == 3 and counts["Conv"]["weight"] == 3
    assert "bias" not in counts["Conv"]
    assert counts["Gemm"] == {"input": 1, "nodes": 1, "weight": 1}
    assert counts["Add"] == {"input": 1, "nodes": 1}
    assert "GlobalAveragePool" not in counts
    inits = q.graph.initializers
    for node in q.graph:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits[node.inputs[2].name].const_value.numpy()
        assert zp.dtype == np.int8 and not zp.any(), "TensorRT wants symmetric int8, zero point 0"
        if node.op_type == "DequantizeLinear" and node.inputs[0].is_initializer():
            weight = inits[node.inputs[0].name].const_value.numpy()
            consumer = next(iter(node.outputs[0].uses())).node
            axis = node.attributes["axis"].as_int()
            scale = inits[node.inputs[1].name].const_value.numpy()
            # per output channel: Conv axis 0, Gemm with transB=1 axis 0
            assert axis == 0 and scale.shape == (weight.shape[0],), consumer.op_type
            assert np.abs(weight).max() <= 127


@pytest.mark.parametrize(("spec", "gemm_axis", "matmul_axis"), [(CPU, 1, 1), (TRT, 1, 1)])
def test_weight_axis_follows_output_channels(spec, gemm_axis, matmul_axis) -> None:  # type: ignore[no-untyped-def]
    model = _models.dense_model()
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    graph_tools.ensure_types(model)
    plan = plan_quantization(model.graph, spec)
    sess = graph_tools.ort_session(graph_tools.model_bytes(model, plan.calibrated))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    outs["x"] = x
    ranges = {n: (float(outs[n].min()), float(outs[n].max())) for n in plan.calibrated}
    InsertQdqPass(spec, ranges)(model)
    axes = {}
    for node in model.graph:
        if node.op_type == "DequantizeLinear" and node.inputs[0].is_initializer():
            consumer = next(iter(node.outputs[0].uses())).node
            if node.inputs[0].dtype == ir.DataType.INT8:
                axes[consumer.op_type] = node.attributes["axis"].as_int()
    # Gemm without transB: B is (K, N), output channels on axis 1; MatMul (K, N): axis 1
    assert axes == {"Gemm": gemm_axis, "MatMul": matmul_axis}


def test_weights_are_stored_as_int8_and_the_file_shrinks() -> None:
    rng = np.random.default_rng(0)
    text = f"""{_models.HEADER}
    big (float[N, 256] x) => (float[N, 256] y) {{
      h = Gemm <transB = 1> (x, w1, b1)
      r = Relu (h)
      y = Gemm <transB = 1> (r, w2, b2)
    }}"""
    weights = {
        "w1": rng.standard_normal((256, 256)).astype(np.float32),
        "b1": np.zeros(256, np.float32),
        "w2": rng.standard_normal((256, 256)).astype(np.float32),
        "b2": np.zeros(256, np.float32),
    }
    model = _models.from_text(text, weights)
    before = len(ir.to_proto(model).SerializeToString())
    graph_tools.ensure_types(model)
    plan = plan_quantization(model.graph, CPU)
    InsertQdqPass(CPU, {n: (-4.0, 4.0) for n in plan.calibrated})(model)
    after = len(ir.to_proto(model).SerializeToString())
    assert all(
        v.dtype != ir.DataType.FLOAT or v.const_value.size < 1000
        for v in model.graph.initializers.values()
    )
    assert 0.24 < after / before < 0.27


def test_idempotent_and_refuses_quantized_models() -> None:
    model, q, _ = _quantized(CPU)
    before = ir.to_proto(q).SerializeToString()
    result = InsertQdqPass(CPU, {})(q)
    assert not result.modified
    assert ir.to_proto(q).SerializeToString() == before


def test_numerics_close_to_float() -> None:
    model, q, x = _quantized(CPU)
    ref = _models.run(model, {"x": x})
    # both the exact Q/DQ arithmetic and onnxruntime's integer kernels
    assert _models.sqnr_db(ref, _models.run(q, {"x": x})) > 25
    assert _models.sqnr_db(ref, _models.run(q, {"x": x}, optimize=True)) > 25


def test_excluded_node_reads_float_and_keeps_int8_weights() -> None:
    _, q, _ = _quantized(CPU, exclude=["Conv_2"])
    dw = next(n for n in q.graph if n.name == "Conv_2")
    x_in, w_in, b_in = dw.inputs
    assert x_in.name == "r1"  # float activation (not a DequantizeLinear output)
    # weight-only int8 storage, folded by onnxruntime at load (fold.py)
    q_w, s_w, axis = int8_weight(w_in)
    assert w_in.producer().op_type == "Mul" and q_w.dtype == np.int8 and axis == 0
    assert b_in.is_initializer() and b_in.dtype == ir.DataType.FLOAT
    # r1 is still quantized for the Add (a quantized op) that also reads it
    add = next(n for n in q.graph if n.op_type == "Add")
    assert all(v.producer().op_type == "DequantizeLinear" for v in add.inputs)


def test_tensorrt_flavour_keeps_dequantize_for_float_layers() -> None:
    _, q, _ = _quantized(TRT, exclude=["Conv_2"])
    dw = next(n for n in q.graph if n.name == "Conv_2")
    assert dw.inputs[1].producer().op_type == "DequantizeLinear"


def test_folded_weights_compute_as_dequantize_and_fold_at_load(tmp_path) -> None:
    """Cast → Mul gives DequantizeLinear's numbers, and onnxruntime folds it into a float
    initializer when the session is created (a weight DQ it keeps and runs every call)."""
    keep = ["Conv_2", "Add_5"]
    model, folded, x = _quantized(CPU, exclude=keep)
    _, plain, _ = _quantized(CPU.replace(fold_float_weights=False), exclude=keep)
    assert np.array_equal(_models.run(folded, {"x": x}), _models.run(plain, {"x": x}))
    np.testing.assert_allclose(
        _models.run(folded, {"x": x}, optimize=True),
        _models.run(plain, {"x": x}, optimize=True),
        rtol=1e-5,
        atol=1e-5,
    )
    # Conv_2 reads float r1; Conv_4 reads int8 r2 but writes float c3 (Add_5 is float),
    # and Conv_0 writes r1, which only float layers read: no integer kernel for any of
    # them. The Gemm runs one.
    producers = {
        n.name: n.inputs[1].producer().op_type
        for n in folded.graph
        if n.op_type in ("Conv", "Gemm")
    }
    assert producers == {
        "Conv_0": "Mul",
        "Conv_2": "Mul",
        "Conv_4": "Mul",
        "Gemm_8": "DequantizeLinear",
    }
    ops = {n.op_type for n in _models.ort_optimized(folded, tmp_path).graph.node}
    assert "Cast" not in ops and "Mul" not in ops  # folded at load
    kept = [
        n
        for n in _models.ort_optimized(plain, tmp_path).graph.node
        if n.op_type == "DequantizeLinear"
    ]
    assert any(n.input[0].endswith("_quantized") for n in kept)  # the unfolded form stays


def test_missing_range_is_an_error() -> None:
    model = _models.block_model()
    with pytest.raises(ValueError, match="no calibrated range"):
        InsertQdqPass(CPU_SPEC, {})(model)


def test_old_opset_is_refused() -> None:
    model = _models.block_model()
    model.opset_imports[""] = 12
    with pytest.raises(ValueError, match="opset 13"):
        InsertQdqPass(CPU_SPEC, {"x": (0.0, 1.0)})(model)


def test_float_stem_of_the_flavours() -> None:
    """With the spec's float stem, the Conv reading the input computes in float."""
    model, q, _ = _quantized(CPU_SPEC)
    stem = next(n for n in q.graph if n.name == "Conv_0")
    assert stem.inputs[0].name == "x"  # the image is not quantized
    assert int8_weight(stem.inputs[1])[0].dtype == np.int8  # int8 weight all the same
    assert stem.inputs[1].producer().op_type == "Mul"  # folded by onnxruntime at load
    counts = count_qdq(q)
    assert counts["Conv"]["input"] == 2 and counts["Conv"]["weight"] == 3
