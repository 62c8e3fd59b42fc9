"""Transformer fusions (issue #14): match counts on a foreign BERT, refusals, numerics.

The BERT is `bench.foreign.bert_bytes()` (random-init, 2 layers, hidden 128, 2 heads,
TorchScript export at opset 17, dynamic batch and sequence): LayerNorm is already
one op there; GELU is written out with Erf; attention is torch's SDPA export with
its softmax NaN guard. Its biases are zero, so the cleanup drops the bias Adds and
no BiasGelu can match. Numerics: fused vs unfused under onnxruntime with graph
optimizations off, batch 2, sequence 128 and 64, max |error| ≤ 1e-5 (measured
~1e-6: float32 reassociation inside the fused kernels).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from compiler.ground.sessions import open_session, session_options
from compiler.recording import PassRecord
from compiler.stages.optimize import optimize
from passes.fusion import nan_guard
from passes.fusion.transformer import (
    FuseAttentionPass,
    FuseLayerNormPass,
    FuseOnnxGeluPass,
    transformer_passes,
)

TOLERANCE = 1e-5


def _bert() -> ir.Model:
    from bench.foreign import bert_bytes

    return ir.from_proto(onnx.load_from_string(bert_bytes()))


@pytest.fixture(scope="module")
def unfused() -> ir.Model:
    return optimize(_bert())[0]


@pytest.fixture(scope="module")
def ort_fused() -> tuple[ir.Model, list[PassRecord]]:
    return optimize(_bert(), fusions="onnxruntime")


@pytest.fixture(scope="module")
def quantizable() -> tuple[ir.Model, list[PassRecord]]:
    return optimize(_bert(), fusions="onnxruntime", keep_weighted_matmuls=True)


def _ops(model: ir.Model) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((n.domain or "", n.op_type) for n in model.graph.all_nodes())


def _matches(records: list[PassRecord]) -> dict[str, dict[str, int]]:
    return {r.name: r.matches for r in records if r.matches is not None}


def _weighted_matmuls(model: ir.Model) -> int:
    return sum(
        1
        for n in model.graph.all_nodes()
        if n.op_type in ("MatMul", "Gemm")
        and n.inputs[1] is not None
        and n.inputs[1].is_initializer()
    )


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = open_session(ir.to_proto(model).SerializeToString(), session_options(level="none"))
    return session.run(None, feeds)


def test_onnxruntime_flavour_matches_on_bert(ort_fused: tuple[ir.Model, list[PassRecord]]) -> None:
    model, records = ort_fused
    matches = _matches(records)
    assert matches["FuseGeluPass"] == {"erf_gelu": 0, "gelu": 2}
    assert matches["FuseSkipLayerNormPass"] == {"bias_last": 0, "skip_layer_norm": 4}
    attention = matches["FuseAttentionPass"]
    assert (attention["nan_guard"], attention["sdpa"], attention["sdpa_via_mha"]) == (2, 2, 2)
    ops = _ops(model)
    assert ops[("com.microsoft", "Gelu")] == 2 and ops[("", "Erf")] == 0
    assert ops[("com.microsoft", "SkipLayerNormalization")] == 4
    assert ops[("com.microsoft", "MultiHeadAttention")] == 2 and ops[("", "Softmax")] == 0
    assert not any(d == "ai.onnxruntime._fusion" for d, _ in ops)
    # the other passes' records say nothing about matches; the report key is there
    assert next(r for r in records if r.name == "FuseMatMulAddPass").matches is None
    assert "matches" in records[0].to_dict()
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_fused_bert_keeps_dynamic_axes_and_the_function(
    ort_fused: tuple[ir.Model, list[PassRecord]], unfused: ir.Model
) -> None:
    from bench.foreign import bert_feeds

    model, _ = ort_fused
    assert [str(d) for d in model.graph.inputs[0].shape] == ["batch", "sequence"]
    rng = np.random.default_rng(0)
    for length in (128, 64):
        feeds = bert_feeds(rng, 2, length)
        for got, want in zip(_run(model, feeds), _run(unfused, feeds), strict=True):
            assert got.shape == want.shape
            assert float(np.abs(got - want).max()) <= TOLERANCE


def test_each_pass_is_idempotent(ort_fused: tuple[ir.Model, list[PassRecord]]) -> None:
    model = ir.from_proto(ir.to_proto(ort_fused[0]))
    for p in transformer_passes("onnxruntime"):
        result = p(model)
        assert not result.modified, type(p).__name__


def test_quantizable_flavour_keeps_every_weighted_matmul(
    quantizable: tuple[ir.Model, list[PassRecord]], unfused: ir.Model
) -> None:
    model, records = quantizable
    assert _weighted_matmuls(model) == _weighted_matmuls(unfused) == 13
    # the packed-QKV Attention rule (it takes the projection weights) is not even tried
    assert "attention" not in _matches(records)["FuseAttentionPass"]
    assert _ops(model)[("com.microsoft", "MultiHeadAttention")] == 2


def test_portable_flavour_emits_no_contrib_op_on_bert() -> None:
    model, records = optimize(_bert(), fusions="portable")
    assert {d for d, _ in _ops(model)} == {""}
    # opset 17: GELU stays written out (the standard Gelu needs opset 20)
    assert _matches(records)["FuseOnnxGeluPass"] == {}
    assert _ops(model)[("", "Erf")] == 2


def test_no_fusion_touches_a_cnn(small_cnn_onnx: Path) -> None:
    proto = onnx.load(str(small_cnn_onnx))
    plain, _ = optimize(ir.from_proto(proto))
    for flavour in ("onnxruntime", "portable"):
        fused, records = optimize(ir.from_proto(proto), fusions=flavour)
        assert all(not any(r.matches.values()) for r in records if r.matches is not None)
        assert ir.to_proto(fused).SerializeToString() == ir.to_proto(plain).SerializeToString()


_DECOMPOSED = """
<ir_version: 9, opset_import: ["" : 20]>
g (float[N, S, 8] x) => (float[N, S, 8] y) <float[8] scale = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0},
    float[8] bias = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}, int64[1] axes = {-1}, float eps = {1e-5},
    float half = {0.5}, float one = {1.0}, float sqrt2 = {1.4142135623730951}> {
    mean = ReduceMean <keepdims = 1> (x, axes)
    d = Sub(x, mean)
    dd = Mul(d, d)
    var = ReduceMean <keepdims = 1> (dd, axes)
    ve = Add(var, eps)
    sd = Sqrt(ve)
    n = Div(d, sd)
    ns = Mul(n, scale)
    ln = Add(ns, bias)
    t = Div(ln, sqrt2)
    e = Erf(t)
    e1 = Add(e, one)
    m = Mul(ln, e1)
    y = Mul(m, half)
}
"""


def test_portable_flavour_fuses_decomposed_layer_norm_and_gelu() -> None:
    model = ir.from_proto(onnx.parser.parse_model(_DECOMPOSED))
    before = ir.from_proto(ir.to_proto(model))
    ln, gelu = FuseLayerNormPass()(model), FuseOnnxGeluPass()(model)
    assert ln.matches == {"layer_norm": 2} and gelu.matches == {"gelu": 1}
    assert [n.op_type for n in model.graph] == ["LayerNormalization", "Gelu"]
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    (got,), (want,) = _run(model, {"x": x}), _run(before, {"x": x})
    assert float(np.abs(got - want).max()) <= TOLERANCE


def test_layer_norm_refuses_a_bias_over_more_than_the_last_axis() -> None:
    text = _DECOMPOSED.replace("float[8] bias", "float[2, 1, 8] bias").replace(
        "{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}", "{" + ", ".join(["0.1"] * 16) + "}"
    )
    model = ir.from_proto(onnx.parser.parse_model(text))
    result = FuseLayerNormPass()(model)
    assert result.matches == {"layer_norm": 1}  # the LayerNorm itself, not its Add
    assert [n.op_type for n in model.graph][:2] == ["LayerNormalization", "Add"]


def test_opset_below_20_gets_no_standard_gelu() -> None:
    model = ir.from_proto(onnx.parser.parse_model(_DECOMPOSED.replace('"" : 20', '"" : 18')))
    result = FuseOnnxGeluPass()(model)
    assert not result.modified and result.matches == {}


_GUARD = """
<ir_version: 9, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 4] y) <float[{shape}] zero = {{0.0}}> {{
    p = Softmax <axis = -1> (x)
    nan = IsNaN(p)
    y = Where(nan, zero, p)
}}
"""


def test_nan_guard_zero_becomes_a_scalar_once() -> None:
    proto = onnx.parser.parse_model(_GUARD.format(shape="1"))
    unshaped = ir.from_proto(proto)
    assert nan_guard.rules.apply_to_model(unshaped) == 0  # p's rank unknown: refused
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    assert nan_guard.rules.apply_to_model(model) == 1
    assert nan_guard.rules.apply_to_model(model) == 0  # already a scalar
    x = np.array([[1.0, 2.0, 3.0, 4.0], [np.nan, 0.0, 1.0, 2.0]], np.float32)
    (y,) = _run(model, {"x": x})
    assert y.shape == (2, 4) and np.all(y[1] == 0) and np.isfinite(y[0]).all()


def test_attention_pass_refuses_without_a_softmax(small_cnn_onnx: Path) -> None:
    model = ir.from_proto(onnx.load(str(small_cnn_onnx)))
    before = ir.to_proto(model).SerializeToString()
    result = FuseAttentionPass()(model)
    assert not result.modified and result.matches == {}
    assert ir.to_proto(model).SerializeToString() == before


def _shape_reader(bias_size: int, end: int | None) -> ir.Model:
    """y = x @ W + b (x: (batch, seq, 4)), s = Shape(y)[0:end], t = Shape(x @ W)[0:end]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["p"]),
            helper.make_node("Add", ["b", "p"], ["y"]),
            helper.make_node("Shape", ["y"], ["s"], **({} if end is None else {"end": end})),
            helper.make_node("Shape", ["p"], ["t"], **({} if end is None else {"end": end})),
        ],
        "shape_reader",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("s", TensorProto.INT64, None),
            helper.make_tensor_value_info("t", TensorProto.INT64, None),
        ],
        [
            numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=(bias_size,)).astype(np.float32), "b"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8  # onnxruntime 1.31 reads IR <= 13
    model = ir.from_proto(proto)
    ir.passes.common.ShapeInferencePass()(model)
    return model


def test_shape_reads_move_off_the_bias_and_the_projection() -> None:
    """bias_shape: Shape(b + x @ W) → Shape(x @ W) → Shape(x)[:2]; same values at two shapes."""
    from passes.fusion import bias_shape

    model = _shape_reader(bias_size=4, end=-1)  # every axis but W's
    before = ir.to_proto(model)
    assert bias_shape.rules.apply_to_model(model) == 3  # bias, then both projections
    readers = {n.outputs[0].name: n.inputs[0].name for n in model.graph if n.op_type == "Shape"}
    assert readers == {"s": "x", "t": "x"}
    for seq in (3, 7):
        feeds = {"x": np.random.default_rng(seq).normal(size=(2, seq, 4)).astype(np.float32)}
        for got, want in zip(_run(model, feeds), _run(ir.from_proto(before), feeds), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("bias_size", "end"), [(1, 3), (4, 3), (4, None)])
def test_shape_reads_that_could_change_stay(bias_size: int, end: int | None) -> None:
    """The last axis is W's to change: a Shape slice that reaches it stays on the projection
    (a bias of 1 or of the last dimension moves off; nothing moves further)."""
    from passes.fusion import bias_shape

    model = _shape_reader(bias_size=bias_size, end=end)
    bias_shape.rules.apply_to_model(model)
    readers = {n.outputs[0].name: n.inputs[0].name for n in model.graph if n.op_type == "Shape"}
    assert readers == {"s": "p", "t": "p"}


def _gathered_shape(indices: list[int]) -> ir.Model:
    """p = x @ W (x: (batch, seq, 4)); each index i gives an output Gather(Shape(p), i)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Shape", ["p"], ["s"])]
    inits = [numpy_helper.from_array(np.ones((4, 6), np.float32), "w")]
    outputs = [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)]
    for k, index in enumerate(indices):
        inits.append(numpy_helper.from_array(np.array(index, np.int64), f"i{k}"))
        nodes.append(helper.make_node("Gather", ["s", f"i{k}"], [f"g{k}"]))
        outputs.append(helper.make_tensor_value_info(f"g{k}", TensorProto.INT64, None))
    graph = helper.make_graph(
        nodes,
        "gathered_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        outputs,
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = ir.from_proto(proto)
    ir.passes.common.ShapeInferencePass()(model)
    return model


@pytest.mark.parametrize(
    ("indices", "moves"), [([0, 1], True), ([0, -2], True), ([0, 2], False), ([-1], False)]
)
def test_whole_shape_gathered_before_the_last_axis_moves_off_the_projection(
    indices: list[int], moves: bool
) -> None:
    """TorchScript's `q.size(0)`, `q.size(1)`: a whole Shape of x @ W read only at axes before
    the last moves to x (then the packed-QKV Attention rule can take the projections);
    a read of the last axis, which W changes, keeps it on the projection. Same values."""
    from passes.fusion import bias_shape

    model = _gathered_shape(indices)
    before = ir.to_proto(model)
    assert bias_shape.rules.apply_to_model(model) == int(moves)
    reader = next(n for n in model.graph if n.op_type == "Shape").inputs[0].name
    assert reader == ("x" if moves else "p")
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)}
    for got, want in zip(_run(model, feeds), _run(ir.from_proto(before), feeds), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("first", "second", "swaps"),
    [("b", "x", True), ("x", "b", False), ("m", "x", False), ("b", "c", False)],
)
def test_bias_last_puts_a_1d_constant_second(first: str, second: str, swaps: bool) -> None:
    """bias_order: Add(b, x) → Add(x, b) for a 1-D constant b; a 2-D constant, a bias
    already second or two constants stay. Same values."""
    from onnx import TensorProto, helper, numpy_helper

    from passes.fusion import bias_order

    rng = np.random.default_rng(0)
    inits = {
        "b": rng.normal(size=(4,)).astype(np.float32),
        "m": rng.normal(size=(3, 4)).astype(np.float32),
        "c": rng.normal(size=(4,)).astype(np.float32),
    }
    graph = helper.make_graph(
        [helper.make_node("Add", [first, second], ["y"])],
        "bias_order",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = ir.from_proto(proto)
    assert bias_order.rules.apply_to_model(model) == int(swaps)
    add = next(n for n in model.graph if n.op_type == "Add")
    assert [v.name for v in add.inputs] == ([second, first] if swaps else [first, second])
    feeds = {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)}
    np.testing.assert_array_equal(_run(model, feeds)[0], _run(ir.from_proto(proto), feeds)[0])
