"""SimplifyWithOnnxsimPass: onnxsim with dynamic dims kept and an exact `modified`."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
import onnxsim
import pytest

from passes.cleanup import SimplifyWithOnnxsimPass
from passes.cleanup.onnxsim import model_fingerprint

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'

FOLDABLE = f"""{HEADER}
g (float[N, 3, 4] x) => (float[N, 6] y) {{
  w2 = Add (W, W)
  shape = Shape (x)
  batch = Slice (shape, zero, one)
  target = Concat <axis = 0> (batch, twelve)
  flat = Reshape (x, target)
  i = Identity (flat)
  y = MatMul (i, w2)
}}"""


@pytest.fixture
def foldable(kit, rng):
    return kit.build(
        FOLDABLE,
        W=kit.normal(rng, 12, 6),
        zero=np.array([0]),
        one=np.array([1]),
        twelve=np.array([12]),
    )


def test_folds_constants_and_keeps_the_dynamic_batch(kit, foldable):
    out = kit.apply(SimplifyWithOnnxsimPass(), foldable)
    assert out.modified
    counts = kit.op_counts(out.after)
    assert counts["Add"] == 0 and counts["Identity"] == 0
    assert counts["MatMul"] == 1
    dims = [d.dim_param or d.dim_value for d in out.after.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 4]
    out_dims = out.after.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "N"


def test_is_functional_and_keeps_the_models_metadata(kit, foldable):
    onnx.helper.set_model_props(foldable, {"source": "test"})
    model = ir.from_proto(foldable)
    before = kit.serialized(model)
    result = SimplifyWithOnnxsimPass()(model)
    assert result.model is not model
    assert kit.serialized(model) == before  # input untouched
    assert dict(result.model.metadata_props) == {"source": "test"}


def test_simple_model_is_not_modified(kit):
    m = kit.build(f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) {{ y = Relu (x) }}")
    out = kit.apply(SimplifyWithOnnxsimPass(), m)
    assert not out.modified


def test_fingerprint_ignores_names_but_not_weights(kit, rng):
    def text(weight: str, hidden: str) -> str:
        return (
            f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) "
            f"{{ {hidden} = MatMul (x, {weight})\n y = Relu ({hidden}) }}"
        )

    w = kit.normal(rng, 4, 4)
    a = kit.build(text("W", "hidden"), W=w)
    b = kit.build(text("V", "h"), V=w)
    c = kit.build(text("V", "h"), V=w + 1)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(b) != model_fingerprint(c)


@pytest.mark.parametrize("failure", ["raises", "check-fails"])
def test_falls_back_to_the_input_when_onnxsim_fails(kit, foldable, monkeypatch, caplog, failure):
    def broken(model, **kwargs):
        if failure == "raises":
            raise RuntimeError("boom")
        return model, False

    monkeypatch.setattr(onnxsim, "simplify", broken)
    model = ir.from_proto(foldable)
    before = kit.serialized(model)
    with caplog.at_level(logging.WARNING, logger="passes"):
        result = SimplifyWithOnnxsimPass()(model)
    assert result.modified is False
    assert result.model is not model
    assert kit.serialized(result.model) == before
    assert "as it was before" in caplog.text


def test_unsorted_graph_falls_back_without_raising(kit):
    """onnxsim refuses a graph whose nodes are out of order, and onnx-ir's cloner cannot
    copy one (a forward reference looks like an outer-scope value); onnxruntime runs it,
    so the pass must hand it on unchanged for TopologicalSortPass, not crash the run."""
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            [
                onnx.helper.make_node("Relu", ["a"], ["y"]),
                onnx.helper.make_node("Neg", ["x"], ["a"]),
            ],
            "unsorted",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
        ir_version=8,
    )
    result = SimplifyWithOnnxsimPass()(ir.from_proto(proto))
    assert result.modified is False
    assert [n.op_type for n in ir.to_proto(result.model).graph.node] == ["Relu", "Neg"]
