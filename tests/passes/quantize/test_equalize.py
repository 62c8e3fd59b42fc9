"""Cross-layer equalization: the FP32 function is preserved (onnxruntime, stated tolerances)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.equalize import (
    EqualizeCrossLayerPass,
    EqualizeStreamPass,
    channel_maxima,
    equalize,
    find_pairs,
    find_streams,
    stream_ranges,
)
from tests.passes.quantize import _models

# float32 round-off of rescaled weights; outputs are O(1)
RTOL, ATOL = 1e-4, 1e-4


def _feeds(x: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]


def test_finds_the_pairs_and_the_residual_stream() -> None:
    model = _models.block_model()
    pairs = find_pairs(model)
    # Conv_0 → Relu → depthwise Conv_2 (r1 also feeds the Add: not a pair); Conv_2 → Clip → Conv_4
    assert [(p.producer.name, p.consumer.name) for p in pairs] == [("Conv_2", "Conv_4")]
    assert not pairs[0].depthwise_consumer
    streams = find_streams(model)
    # c3 + r1 → s: r1 comes from a Relu, so the stream cannot be scaled exactly
    assert streams == []


def test_pair_equalization_preserves_the_function_on_its_statistics() -> None:
    model = _models.block_model()
    x = _models.images(32)
    ref = _models.run(model, {"x": x})
    pairs = find_pairs(model)
    maxima = channel_maxima(model, pairs, _feeds(x))
    before = graph_tools.constant(pairs[0].producer.inputs[1]).copy()
    result = EqualizeCrossLayerPass(maxima, alpha_dense=1.0, headroom=1.0)(model)
    assert result.modified
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(_models.run(model, {"x": x}), ref, rtol=RTOL, atol=ATOL)
    after = graph_tools.constant(pairs[0].producer.inputs[1])
    assert not np.allclose(before, after)
    # every channel of the activation now peaks at the same value: the Clip's new bound
    m = channel_maxima(model, find_pairs(model), _feeds(x))
    top = next(iter(m.values()))
    np.testing.assert_allclose(top[top > 0], top.max(), rtol=1e-4)
    # idempotent: the pair is marked, a second run changes nothing
    assert not EqualizeCrossLayerPass(m, alpha_dense=1.0)(model).modified


def test_stream_equalization_is_exact() -> None:
    text = f"""{_models.HEADER}
    res (float[N, 4, 6, 6] x) => (float[N, 5] y) {{
      a = Conv (x, w0, b0)
      c1 = Conv (a, w1, b1)
      r1 = Relu (c1)
      c2 = Conv (r1, w2, b2)
      s = Add (a, c2)
      c3 = Conv (s, w3, b3)
      p = GlobalAveragePool (c3)
      y = Flatten (p)
    }}"""
    rng = np.random.default_rng(0)
    gains = np.array([0.01, 0.1, 1.0, 10.0, 50.0, 0.5], np.float32)
    weights = {
        "w0": (rng.standard_normal((6, 4, 1, 1)) * gains[:, None, None, None]).astype(np.float32),
        "b0": rng.standard_normal(6).astype(np.float32),
        "w1": rng.standard_normal((6, 6, 1, 1)).astype(np.float32),
        "b1": rng.standard_normal(6).astype(np.float32),
        "w2": rng.standard_normal((6, 6, 1, 1)).astype(np.float32),
        "b2": rng.standard_normal(6).astype(np.float32),
        "w3": rng.standard_normal((5, 6, 1, 1)).astype(np.float32),
        "b3": rng.standard_normal(5).astype(np.float32),
    }
    model = _models.from_text(text, weights)
    x = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    ref = _models.run(model, {"x": x})
    streams = find_streams(model)
    assert len(streams) == 1 and {v.name for v in streams[0].values} == {"a", "c2", "s"}
    ranges = stream_ranges(model, streams, _feeds(x))
    assert EqualizeStreamPass(ranges, alpha=1.0)(model).modified
    np.testing.assert_allclose(_models.run(model, {"x": x}), ref, rtol=1e-4, atol=1e-3)
    new = stream_ranges(model, find_streams(model), _feeds(x))
    spread = np.max(np.stack(list(new.values())), axis=0)
    assert spread.max() / spread.min() < 1.01  # alpha = 1: every channel spans the same range
    assert not EqualizeStreamPass(new, alpha=1.0)(model).modified


def test_equalize_reports_what_it_did() -> None:
    model = _models.block_model()
    x = _models.images(16)
    ref = _models.run(model, {"x": x})
    pairs, streams = equalize(model, _feeds(x), headroom=2.0, alpha_dense=0.5)
    assert (pairs, streams) == (1, 0)
    np.testing.assert_allclose(_models.run(model, {"x": x}), ref, rtol=RTOL, atol=ATOL)
