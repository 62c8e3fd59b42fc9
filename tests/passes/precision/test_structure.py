"""FP16 structure: which nodes become float16, where the Casts go, what the I/O types are.

Small models written in ONNX text; each conversion is held to the pass contract
(`_models.convert`: full ONNX check, `modified` exact, idempotent) and run by
onnxruntime against float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.passes.precision import _models
from tests.passes.precision._models import F16, F32

RNG = np.random.default_rng(0)


def _normal(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


CONV_RELU_MEAN = """
g (float[N,3,8,8] x) => (float[N,4] y) {
  c = Conv<pads=[1,1,1,1]>(x, w, b)
  r = Relu(c)
  y = ReduceMean<axes=[2,3], keepdims=0>(r)
}"""


def _conv_model() -> onnx.ModelProto:
    return _models.build(CONV_RELU_MEAN, w=_normal(4, 3, 3, 3, scale=0.3), b=_normal(4))


def test_conv_relu_reducemean_float16_io() -> None:
    proto = _conv_model()
    x = _normal(8, 3, 8, 8)
    result, after = _models.convert(proto, {"x": x})
    assert result.modified
    s = result.summary
    assert s.converted == 2  # Conv, Relu
    assert [(k.op_type, k.reason) for k in s.kept] == [("ReduceMean", "op_type")]
    # x arrives float16; Relu's output is cast up for ReduceMean, whose result is cast
    # down to the float16 graph output
    assert _models.io_types(after) == ([F16], [F16])
    assert sorted(_models.casts(after)) == [F32, F16]
    assert s.casts_inserted == 2
    assert _models.half_initializers(after) == ["b", "w"]
    assert s.constants_converted == 2 and s.constants_copied == 0
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=5e-3, atol=5e-3)
    assert s.outputs["y"].cosine > 0.9999


def test_conv_relu_reducemean_keep_io_types() -> None:
    proto = _conv_model()
    x = _normal(8, 3, 8, 8)
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True)
    assert _models.io_types(after) == ([F32], [F32])
    # x cast down for Conv, Relu's output cast up for ReduceMean; y is float32 already
    assert sorted(_models.casts(after)) == [F32, F16]
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=5e-3, atol=5e-3)


MATMUL_ADD_SOFTMAX = """
g (float[N,16] x) => (float[N,8] y) {
  m = MatMul(x, w)
  a = Add(m, b)
  y = Softmax<axis=-1>(a)
}"""


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_matmul_add_softmax_all_float16(keep_io_types: bool) -> None:
    proto = _models.build(MATMUL_ADD_SOFTMAX, w=_normal(16, 8, scale=0.3), b=_normal(8))
    x = _normal(16, 16)
    result, after = _models.convert(proto, {"x": x}, keep_io_types=keep_io_types)
    assert result.summary.converted == 3 and result.summary.kept == ()
    want = F32 if keep_io_types else F16
    assert _models.io_types(after) == ([want], [want])
    # only the boundary casts, and only with float32 I/O
    assert sorted(_models.casts(after)) == ([F32, F16] if keep_io_types else [])
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    np.testing.assert_allclose(out.astype(np.float32), ref, atol=2e-3)


LAYER_NORM = """
g (float[N,16] x) => (float[N,16] y) {
  mean = ReduceMean<axes=[-1]>(x)
  d = Sub(x, mean)
  two = Constant<value=float {2.0}>()
  sq = Pow(d, two)
  var = ReduceMean<axes=[-1]>(sq)
  eps = Constant<value=float {1e-5}>()
  ve = Add(var, eps)
  std = Sqrt(ve)
  n = Div(d, std)
  g = Mul(n, gamma)
  y = Add(g, beta)
}"""


def test_decomposed_layernorm_keeps_its_statistics() -> None:
    proto = _models.build(LAYER_NORM, gamma=1 + _normal(16, scale=0.1), beta=_normal(16, scale=0.1))
    x = _normal(32, 16, scale=3.0) + 5.0
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True)
    kept = {(k.op_type, k.reason) for k in result.summary.kept}
    assert kept == {
        ("ReduceMean", "op_type"),
        ("Pow", "op_type"),
        ("Add", "norm_statistics"),  # + eps
        ("Sqrt", "norm_statistics"),
        ("Div", "norm_statistics"),  # (x - mean) / std
    }
    assert result.summary.converted == 3  # x - mean, * gamma, + beta
    nodes = {n.output[0]: n for n in after.graph.node}
    assert nodes["d"].op_type == "Sub" and nodes["g"].op_type == "Mul"
    # Sub reads x and mean cast down; Pow and Div read d cast up; Mul reads n cast
    # down; ReduceMean reads float32 x directly; y is cast up to the float32 output
    assert sorted(_models.casts(after)) == [F32, F32, F16, F16, F16]
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    np.testing.assert_allclose(out, ref, atol=1e-2)
    assert _models.cosine(out, ref) > 0.9999


def test_shared_initializer_is_copied_for_the_float16_reader() -> None:
    text = """
    g (float[N,4] x) => (float[N,4] y) {
      a = MatMul(x, w)
      s = ReduceSum<keepdims=0>(w)
      y = Add(a, s)
    }"""
    proto = _models.build(text, w=_normal(4, 4))
    x = _normal(8, 4)
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True)
    assert result.summary.constants_copied == 1
    inits = {t.name: t.data_type for t in after.graph.initializer}
    assert inits == {"w": F32, "w_fp16": F16}
    reader = {n.op_type: list(n.input) for n in after.graph.node}
    assert reader["MatMul"][1] == "w_fp16" and reader["ReduceSum"] == ["w"]
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    np.testing.assert_allclose(out, ref, atol=1e-2)


def test_integer_shape_arithmetic_stays_float32() -> None:
    text = """
    g (float[N,8] x) => (float[N,8] y) {
      shape = Shape(x)
      zero = Constant<value=int64[1] {1}>()
      n = Gather(shape, zero)
      f = Cast<to=1>(n)
      half = Constant<value=float {0.5}>()
      h = Mul(f, half)
      i = Cast<to=7>(h)
      r = Relu(x)
      e = Expand(r, shape)
      y = Add(e, r)
    }"""
    proto = _models.build(text)
    x = _normal(4, 8)
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True)
    reasons = {
        k.op_type + ("_int" if k.op_type == "Cast" and "int64" in k.detail else ""): k.reason
        for k in result.summary.kept
    }
    assert reasons == {
        "Cast": "feeds_integer",
        "Mul": "feeds_integer",
        "Cast_int": "non_float_result",
    }
    assert result.summary.converted == 3  # Relu, Expand, Add
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    np.testing.assert_allclose(out, ref, atol=1e-2)


def test_if_node_and_its_bodies_stay_float32() -> None:
    text = """
    g (float[N,4] x) => (float[N,4] y) {
      a = Relu(x)
      total = ReduceMax<keepdims=0>(x)
      zero = Constant<value=float {0.0}>()
      c = Greater(total, zero)
      y = If (c) <then_branch: graph = then_body () => (float[N,4] t) { t = Add(a, a) },
                  else_branch: graph = else_body () => (float[N,4] e) { e = Sub(a, x) }>
    }"""
    proto = _models.build(text)
    x = _normal(4, 4)
    result, after = _models.convert(proto, {"x": x})
    assert [(k.op_type, k.reason) for k in result.summary.kept] == [
        ("ReduceMax", "feeds_integer"),  # only feeds the comparison
        ("Greater", "non_float_result"),
        ("If", "subgraph"),
    ]
    assert result.summary.converted == 1  # Relu
    # a and x are float16 in the main graph: the bodies read float32 Casts of them
    branch = next(n for n in after.graph.node if n.op_type == "If").attribute
    body_inputs = {i for attr in branch for n in attr.g.node for i in n.input}
    assert body_inputs == {"a_fp32", "x_fp32"}
    for sign in (1, -1):  # both branches
        feeds = {"x": sign * np.abs(x)}
        (ref,) = _models.run(proto, feeds)
        (out,) = _models.run(after, feeds)
        np.testing.assert_allclose(out.astype(np.float32), ref, atol=1e-2)


def test_exclude_and_keep_op_types() -> None:
    proto = _conv_model()
    proto.graph.node[0].name = "conv"
    x = _normal(4, 3, 8, 8)
    result, _ = _models.convert(proto, {"x": x}, exclude=["conv"], keep_op_types=())
    assert [(k.name, k.reason) for k in result.summary.kept] == [("conv", "excluded")]
    assert result.summary.converted == 2  # Relu and, with no op types kept, ReduceMean


def test_nothing_to_convert_leaves_the_model_alone() -> None:
    proto = _models.build(
        "g (float[N,4] x) => (float[N] y) { a = Constant<value=int64[1] {1}>() y = ReduceSum<keepdims=0>(x, a) }"
    )
    result, after = _models.convert(proto, {"x": _normal(2, 4)})
    assert not result.modified
    assert result.summary.note and result.summary.kept[0].reason == "op_type"
    assert _models.serialized(after) == _models.serialized(ir.from_proto(proto))


def test_summary_is_plain_data() -> None:
    import json

    result, _ = _models.convert(_conv_model(), {"x": _normal(4, 3, 8, 8)})
    data = result.summary.as_dict()
    assert json.loads(json.dumps(data))["kept_by_reason"] == {"op_type": 1}
    assert data["options"]["max_abs"] == pytest.approx(65504 / 16)
