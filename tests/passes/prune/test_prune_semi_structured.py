"""2:4 sparsity: the pattern, its validation, eligibility and the TensorRT mark."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from prune_reference import run_onnx

from passes.prune.semi_structured import (
    SPARSITY_KEY,
    PruneSemiStructuredPass,
    prune_2_4,
    validate_2_4,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_prune_2_4_keeps_the_two_largest_of_each_group():
    w = np.array([[1.0, -4.0, 3.0, 2.0, 0.5, 0.1, -0.2, 9.0]], np.float32)
    out = prune_2_4(w, axis=1)
    np.testing.assert_array_equal(out, [[0, -4, 3, 0, 0.5, 0, 0, 9]])
    assert validate_2_4(out, axis=1)
    assert not validate_2_4(w, axis=1)


def test_validate_along_the_given_axis():
    rng = np.random.default_rng(0)
    w = prune_2_4(rng.standard_normal((8, 16, 3, 3)).astype(np.float32), axis=1)
    assert validate_2_4(w, axis=1)
    assert not validate_2_4(w, axis=0)  # the groups run along input channels only
    assert np.count_nonzero(w) == w.size // 2
    assert not validate_2_4(np.zeros((4, 6)), axis=1)  # 6 is not a multiple of 4
    assert validate_2_4(np.zeros((4, 8)), axis=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        prune_2_4(np.ones((4, 6)), axis=1)


def test_ties_are_broken_by_position():
    out = prune_2_4(np.ones((1, 4), np.float32), axis=1)
    np.testing.assert_array_equal(out, [[0, 0, 1, 1]])


def _model(kit, rng) -> onnx.ModelProto:
    text = f"""{HEADER}
    g (float[N, 3, 8, 8] x) => (float[N, 6] y) {{
      a = Conv <pads = [1, 1, 1, 1]> (x, W0)
      b = Conv <pads = [1, 1, 1, 1]> (a, W1)
      c = Conv <group = 8, pads = [1, 1, 1, 1]> (b, DW)
      p = GlobalAveragePool (c)
      f = Flatten (p)
      h = Gemm <transB = 1> (f, W2)
      i = Gemm (h, W3)
      y = MatMul (i, W4)
    }}"""
    return kit.build(
        text,
        W0=kit.normal(rng, 8, 3, 3, 3),  # C=3: refused
        W1=kit.normal(rng, 8, 8, 3, 3),  # axis 1
        DW=kit.normal(rng, 8, 1, 3, 3),  # depthwise: refused
        W2=kit.normal(rng, 12, 8),  # transB: K is axis 1
        W3=kit.normal(rng, 12, 6),  # K is axis 0
        W4=kit.normal(rng, 6, 6),  # K=6: refused
    )


def test_pass_prunes_eligible_layers_and_marks_the_model(kit, rng):
    proto = _model(kit, rng)
    model = ir.from_proto(proto)
    result = PruneSemiStructuredPass()(model)
    assert result.modified
    w = {v.name: v.const_value.numpy() for v in model.graph.initializers.values()}
    assert validate_2_4(w["W1"], 1) and validate_2_4(w["W2"], 1) and validate_2_4(w["W3"], 0)
    for name in ("W0", "DW", "W4"):
        assert np.count_nonzero(w[name]) == w[name].size
    summary = result.summary
    assert set(summary.layers) == {"W1", "W2", "W3"}
    assert summary.layers["W1"]["sparsity"] == 0.5
    assert "not a multiple of 4" in summary.refused["W0"]
    assert "depthwise" in summary.refused["DW"]
    assert "not a multiple of 4" in summary.refused["W4"]
    assert summary.as_dict()["pattern"] == "2:4"
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert {m.key: m.value for m in out.metadata_props}[SPARSITY_KEY] == "2:4"
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run_onnx(out, x).shape == (2, 6)
    # idempotent: already 2:4 and already marked
    again = PruneSemiStructuredPass()(model)
    assert again.modified is False
    assert ir.to_proto(model).SerializeToString() == out.SerializeToString()


def test_nothing_eligible_leaves_the_model_unmarked(kit, rng):
    text = f"""{HEADER}
    g (float[N, 3, 8, 8] x) => (float[N, 8, 8, 8] y) {{
      y = Conv <pads = [1, 1, 1, 1]> (x, W0)
    }}"""
    proto = kit.build(text, W0=kit.normal(rng, 8, 3, 3, 3))
    kit.assert_refused(PruneSemiStructuredPass(), proto)
