"""PruneUnstructuredPass and compressed_size: sparsity numbers, refusals, idempotence."""

from __future__ import annotations

import math
import zlib

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from prune_reference import run_onnx

from passes.errors import PassOptionError
from passes.prune.unstructured import (
    PruneUnstructuredPass,
    compressed_size,
    sparsity_summary,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
TEXT = f"""{HEADER}
g (float[N, 16, 8, 8] x) => (float[N, 10] y) {{
  a = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
  r = Relu (a)
  d = Conv <group = 32, pads = [1, 1, 1, 1]> (r, DW)
  p = GlobalAveragePool (d)
  f = Flatten (p)
  h = Gemm <transB = 1> (f, W2, B2)
  y = MatMul (h, W3)
}}"""


@pytest.fixture
def model_proto(kit, rng) -> onnx.ModelProto:
    return kit.build(
        TEXT,
        W1=kit.normal(rng, 32, 16, 3, 3),  # 4608
        B1=kit.normal(rng, 32),
        DW=kit.normal(rng, 32, 1, 3, 3),  # depthwise: refused
        W2=kit.normal(rng, 64, 32),  # 2048
        B2=kit.normal(rng, 64),
        W3=kit.normal(rng, 64, 10),  # 640 < min_size: refused
    )


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {v.name: v.const_value.numpy() for v in model.graph.initializers.values()}


def test_layer_scope_prunes_each_layer_to_the_ratio(model_proto):
    model = ir.from_proto(model_proto)
    result = PruneUnstructuredPass(0.8, scope="layer")(model)
    assert result.modified
    w = _weights(model)
    assert np.count_nonzero(w["W1"] == 0) == math.floor(0.8 * 4608)
    assert np.count_nonzero(w["W2"] == 0) == math.floor(0.8 * 2048)
    assert np.count_nonzero(w["DW"]) == w["DW"].size  # depthwise left dense
    assert np.count_nonzero(w["W3"]) == w["W3"].size  # too small
    assert np.count_nonzero(w["B1"]) == 32  # biases are never pruned
    summary = result.summary
    assert set(summary.layers) == {"W1", "W2"}
    assert summary.refused == {
        "DW": "depthwise convolution",
        "W3": "640 elements < min_size 1024",
    }
    assert summary.layers["W1"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert summary.sparsity == pytest.approx(0.8, abs=1e-3)
    assert summary.as_dict()["zeros"] == summary.zeros > 0
    # the smallest magnitudes went: every survivor is at least as large as every pruned weight
    orig = ir.from_proto(model_proto).graph.initializers["W1"].const_value.numpy()
    pruned = w["W1"] == 0
    assert np.abs(orig[pruned]).max() <= np.abs(orig[~pruned]).min()
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_global_scope_uses_one_threshold(model_proto):
    model = ir.from_proto(model_proto)
    p = PruneUnstructuredPass(0.5, scope="global")
    assert p(model).modified
    w = _weights(model)
    zeros = np.count_nonzero(w["W1"] == 0) + np.count_nonzero(w["W2"] == 0)
    assert zeros == math.floor(0.5 * (4608 + 2048))
    orig = _weights(ir.from_proto(model_proto))
    kept_min = min(np.abs(orig[k][w[k] != 0]).min() for k in ("W1", "W2"))
    pruned_max = max(np.abs(orig[k][w[k] == 0]).max() for k in ("W1", "W2"))
    assert pruned_max <= kept_min


def test_runs_and_stays_close_at_low_sparsity(model_proto):
    x = np.random.default_rng(1).standard_normal((2, 16, 8, 8)).astype(np.float32)
    model = ir.from_proto(model_proto)
    PruneUnstructuredPass(0.8)(model)
    dense, sparse = run_onnx(model_proto, x), run_onnx(model, x)
    assert dense.shape == sparse.shape and not np.allclose(dense, sparse)
    model = ir.from_proto(model_proto)
    PruneUnstructuredPass(0.01, scope="layer")(model)
    np.testing.assert_allclose(run_onnx(model, x), dense, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_second_run_and_ratio_zero_are_no_ops(kit, model_proto, scope):
    model = ir.from_proto(model_proto)
    assert PruneUnstructuredPass(0.0, scope=scope)(model).modified is False
    assert kit.serialized(model) == kit.serialized(ir.from_proto(model_proto))
    assert PruneUnstructuredPass(0.7, scope=scope)(model).modified
    once = ir.to_proto(model).SerializeToString()
    assert PruneUnstructuredPass(0.7, scope=scope)(model).modified is False
    assert PruneUnstructuredPass(0.5, scope=scope)(model).modified is False  # already sparser
    assert ir.to_proto(model).SerializeToString() == once
    assert PruneUnstructuredPass(0.9, scope=scope)(model).modified


def test_refuses_shared_weight_with_other_uses(kit, rng):
    text = f"""{HEADER}
    g (float[N, 64] x) => (float[N, 64] y) {{
      h = MatMul (x, W)
      y = Add (h, W)
    }}"""
    proto = kit.build(text, W=kit.normal(rng, 64, 64))
    p = PruneUnstructuredPass(0.5)
    kit.assert_refused(p, proto)
    result = p(ir.from_proto(proto))
    assert "also used as input 1 of Add" in result.summary.refused["W"]


def test_sparsity_summary_counts_zeros(model_proto):
    model = ir.from_proto(model_proto)
    assert sparsity_summary(model)["zeros"] == 0
    PruneUnstructuredPass(0.5, scope="layer", min_size=0)(model)
    report = sparsity_summary(model)
    assert report["layers"]["W3"]["zeros"] == 320
    assert report["layers"]["DW"]["zeros"] == 0


def test_compressed_size_shrinks_and_accepts_every_form(model_proto, tmp_path):
    data = model_proto.SerializeToString(deterministic=True)
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    expected = len(zlib.compress(data, 9))
    assert compressed_size(data) == compressed_size(path) == compressed_size(str(path)) == expected
    assert compressed_size(model_proto) == expected
    model = ir.from_proto(model_proto)
    dense = compressed_size(model)
    PruneUnstructuredPass(0.8)(model)
    assert compressed_size(model) < 0.6 * dense


def test_bad_arguments():
    with pytest.raises(PassOptionError, match="ratio"):
        PruneUnstructuredPass(1.5)
    with pytest.raises(PassOptionError, match="scope"):
        PruneUnstructuredPass(0.5, scope="block")  # type: ignore[arg-type]
