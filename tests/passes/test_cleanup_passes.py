"""cleanup_passes(): every pass, and the list as a whole, keeps the pass contract on a
model with something for each of them to do."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from passes.cleanup import InferShapesPass, RemoveUnusedNodesExactPass, cleanup_passes

MESSY = """<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
g (float[N, 4] x) => (float[N, 4] y) {
  big = Constant <value = float[4, 4] {1., 2., 3., 4., 5., 6., 7., 8.,
                                       9., 10., 11., 12., 13., 14., 15., 16.}> ()
  i = Identity (x)
  a = Relu (i)
  b = Relu (i)
  d = Dropout (a)
  unused = Sigmoid (x)
  h = MatMul (d, big)
  k = MatMul (b, W2)
  s = Add (h, k)
  t = Add (s, B1)
  u = Add (t, B2)
  y = BatchNormalization <training_mode = 0> (u, scale, bias, mean, var)
}"""


@pytest.fixture
def messy(kit, rng):
    b = kit.normal(rng, 4)
    return kit.build(MESSY, W2=kit.normal(rng, 4, 4), B1=b, B2=b.copy(), **kit.bn_params(rng, 4))


def test_order():
    names = [type(p).__name__ for p in cleanup_passes()]
    assert names == [
        "SimplifyWithOnnxsimPass",
        "LiftConstantsToInitializersPass",
        "RemoveIdentityPass",
        "RemoveDropoutPass",
        "CommonSubexpressionEliminationPass",
        "DeduplicateInitializersPass",
        "RemoveUnusedNodesExactPass",
        "RemoveUnusedOpsetsPass",
        "TopologicalSortPass",
        "InferShapesPass",
    ]
    assert [type(p).__name__ for p in cleanup_passes(onnxsim=False)] == names[1:]


@pytest.mark.parametrize(
    "pass_", cleanup_passes(), ids=lambda p: type(p).__name__.removesuffix("Pass")
)
def test_each_pass_keeps_the_contract(kit, messy, pass_):
    out = kit.apply(pass_, messy)
    if not isinstance(pass_, ir.passes.common.TopologicalSortPass):
        assert out.modified  # each has work to do here


def test_the_list_cleans_everything(kit, messy):
    out = kit.apply(ir.passes.PassManager(cleanup_passes(onnxsim=False)), messy)
    counts = kit.op_counts(out.after)
    assert counts["Identity"] == counts["Dropout"] == counts["Constant"] == 0
    assert counts["Relu"] == 1 and counts["Sigmoid"] == 0
    assert [o.domain for o in out.after.opset_import] == [""]
    assert out.after.graph.node[-1].op_type == "BatchNormalization"  # fusion's job


def test_the_list_with_onnxsim(kit, messy):
    out = kit.apply(ir.passes.PassManager(cleanup_passes()), messy)
    counts = kit.op_counts(out.after)
    assert counts["Identity"] == counts["Dropout"] == counts["Sigmoid"] == 0


def test_unused_nodes_pass_reports_in_place_normalization(kit, rng):
    """onnx-ir 1.1's RemoveUnusedNodesPass drops ``training_mode=0`` without saying so."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
      y = BatchNormalization <training_mode = 0> (x, scale, bias, mean, var)
    }"""
    proto = kit.build(text, **kit.bn_params(rng, 4))
    base = RemoveUnusedNodesPass()(ir.from_proto(proto))
    assert base.modified is False  # the upstream quirk this wrapper exists for
    assert kit.serialized(base.model) != kit.serialized(ir.from_proto(proto))
    out = kit.apply(RemoveUnusedNodesExactPass(), proto)
    assert out.modified
    assert np.isclose(out.error, 0.0)


def test_shape_inference_keeps_the_initializer_order(kit, rng):
    """onnx-ir 1.1's ShapeInferencePass moves initializers over 1 KB to the end."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 32] x) => (float[N, 32] y) {
      h = MatMul (x, W)
      y = Add (h, b)
    }"""
    proto = kit.build(text, W=kit.normal(rng, 32, 32), b=kit.normal(rng, 32))
    base = ShapeInferencePass()(ir.from_proto(proto)).model
    assert list(base.graph.initializers) == ["b", "W"]  # the upstream quirk
    out = kit.apply(InferShapesPass(), proto)
    assert [i.name for i in out.after.graph.initializer] == ["W", "b"]


def test_shape_inference_keeps_sequence_types_in_subgraphs(kit):
    """onnx-ir 1.1's ShapeInferencePass copies only the element type, so an untyped
    sequence value becomes a tensor and the model no longer loads (ONNX's test_if_opt)."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (bool c, float[4] x) => (float[8] y) {
      y = If (c) <then_branch = t () => (float[8] t_out) {
          s = SequenceConstruct (x, x)
          t_out = ConcatFromSequence <axis = 0> (s)
      }, else_branch = e () => (float[8] e_out) {
          e_out = Concat <axis = 0> (x, x)
      }>
    }"""
    proto = kit.build(text)
    feeds = {"c": np.array(True), "x": np.arange(4, dtype=np.float32)}
    base = ShapeInferencePass()(ir.from_proto(proto)).model
    then = base.graph.node(0).attributes["then_branch"].as_graph()
    assert isinstance(then.node(0).outputs[0].type, ir.TensorType)  # the upstream quirk
    out = kit.apply(InferShapesPass(), proto, feeds=feeds)
    assert out.modified
    then = out.model.graph.node(0).attributes["then_branch"].as_graph()
    assert isinstance(then.node(0).outputs[0].type, ir.SequenceType)
