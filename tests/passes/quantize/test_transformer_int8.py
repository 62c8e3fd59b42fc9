"""INT8 that keeps transformers: the transformer spec, int8 embedding tables, dynamic
mode (graph form, onnxruntime's fusion, numerics) and its refusal off the CPU target,
all on bench.foreign's random-init 2-layer BERT (hidden 128)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from bench.foreign import BERT_VOCAB, bert_bytes, token_feeds
from compiler.cli import main
from passes.quantize import CPU_SPEC, PtqOptions, quantize
from passes.quantize.calibrate import Histogram
from passes.quantize.dynamic import quantize_dynamic
from passes.quantize.embedding import QuantizeEmbeddingsPass
from passes.quantize.spec import CPU_TRANSFORMER_SPEC
from passes.quantize.transformer import spec_for
from tests.passes.quantize._models import block_model


@pytest.fixture(scope="module")
def bert() -> ir.Model:
    return ir.from_proto(onnx.load_from_string(bert_bytes()))


def _calib() -> dict[str, np.ndarray]:
    return token_feeds(np.random.default_rng(1), BERT_VOCAB, 16, 32, segments=True)


def _eval() -> dict[str, np.ndarray]:
    return token_feeds(np.random.default_rng(2), BERT_VOCAB, 8, 32, segments=True)


def _session(model: ir.Model | bytes, optimized: str | None = None) -> ort.InferenceSession:
    data = model if isinstance(model, bytes) else ir.to_proto(model).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _cosines(model: ir.Model) -> np.ndarray:
    """Per-sequence cosine of last_hidden_state against the FP32 export."""
    feeds = _eval()
    ref = _session(bert_bytes()).run(None, feeds)[0]
    out = _session(model).run(None, feeds)[0]
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _ops(model: ir.Model | onnx.ModelProto) -> collections.Counter[str]:
    nodes = model.graph.node if isinstance(model, onnx.ModelProto) else model.graph
    return collections.Counter(n.op_type for n in nodes)


def test_histogram_ignores_infinite_values() -> None:
    # a masked attention score holds -inf: the histogram's width once chased it forever
    h = Histogram()
    h.update(np.array([0.5, -1.0, 2.0], np.float32))
    h.update(np.array([-np.inf, 1.0, np.nan, 3.0], np.float32))
    assert (h.min, h.max, h.nonfinite) == (-1.0, 3.0, 2)
    lo, hi = h.range("percentile")
    assert np.isfinite(lo) and np.isfinite(hi) and hi <= 3.0


def test_transformer_gets_its_spec_and_a_cnn_keeps_its_own(bert: ir.Model) -> None:
    assert spec_for(bert.graph, CPU_SPEC).name == CPU_TRANSFORMER_SPEC.name
    assert spec_for(block_model().graph, CPU_SPEC) is CPU_SPEC


def test_embedding_tables_stored_int8_and_gather_within_tolerance(bert: ir.Model) -> None:
    model = ir.from_proto(ir.to_proto(bert))
    table = next(
        v for v in model.graph.initializers.values() if v.name.endswith("word_embeddings.weight")
    )
    floats = table.const_value.numpy().copy()
    passed = QuantizeEmbeddingsPass()
    assert passed(model).modified
    assert any(t.endswith("word_embeddings.weight") for t in passed.tables)
    assert not any(t.endswith("token_type_embeddings.weight") for t in passed.tables)  # small
    assert not QuantizeEmbeddingsPass()(model).modified  # idempotent: row scales stay float
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    size = len(proto.SerializeToString())
    assert size < 0.32 * len(bert_bytes())  # 17.1 MB -> 5.3 MB measured (0.31x)
    # the Gather's output: within half a row step of the float rows
    ids = np.array([[0, 5, 30521, 17]], np.int64)
    gather = next(n for n in model.graph if n.name.endswith("int8_rows"))
    out = next(u.node for u in gather.outputs[0].uses()).outputs[0]  # the Cast
    mul_out = next(u.node for u in out.uses()).outputs[0]
    probe = ir.from_proto(proto)
    probe.graph.outputs.append(probe.graph.node(mul_out.producer().name).outputs[0])  # type: ignore[union-attr]  # the Mul exists: found above
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    got = _session(probe).run(None, feeds)[-1][0]
    want = floats[ids[0]]
    step = np.abs(want).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 + 1e-7)


def test_static_transformer_int8_keeps_attention_and_norms_float(bert: ir.Model) -> None:
    q, summary = quantize(bert, _calib(), PtqOptions(samples=16, range_search=False))
    assert summary.spec == "cpu-transformer"
    assert summary.qdq_counts["MatMul"] == {"input": 12, "nodes": 12, "weight": 12}
    for node in q.graph:
        if node.op_type in ("Softmax", "LayerNormalization", "Add", "Erf"):
            assert not any(
                v is not None
                and v.producer() is not None
                and v.producer().op_type == "DequantizeLinear"  # type: ignore[union-attr]  # checked not None
                for v in node.inputs
            ), node.name
    cos = _cosines(q)
    assert cos.min() > 0.9999  # measured 0.99998 (mean and worst)


def test_dynamic_int8_graph_form_fusion_and_numerics(bert: ir.Model, tmp_path: Path) -> None:
    q, summary = quantize_dynamic(bert, _calib(), PtqOptions(samples=16), reduce_range=True)
    ops = _ops(q)
    assert summary.layers.get("MatMul") == 12
    assert ops["MatMulInteger"] == 12
    assert ops["DynamicQuantizeLinear"] == 8  # Q, K and V share one per layer
    assert ops["MatMul"] == 4  # the attention MatMuls stay float
    assert summary.rounding == "gptq" and summary.reduce_range
    weights = [
        v.const_value.numpy() for v in q.graph.initializers.values() if v.name.endswith("_int8")
    ]
    assert weights and all(np.abs(w).max() <= 127 for w in weights)
    # onnxruntime fuses every chain into its integer-to-float kernels
    _session(q, optimized=str(tmp_path / "opt.onnx"))
    fused = _ops(onnx.load(str(tmp_path / "opt.onnx")))
    assert fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] == 12
    assert fused["MatMulInteger"] == 0
    cos = _cosines(q)
    assert cos.min() > 0.9999  # measured 0.99999
    assert len(ir.to_proto(q).SerializeToString()) < 0.3 * len(bert_bytes())  # 0.27x


@pytest.mark.parametrize("target", ["cuda", "tensorrt"])
def test_dynamic_mode_refused_off_cpu(target: str, tmp_path: Path) -> None:
    path = tmp_path / "bert.onnx"
    path.write_bytes(bert_bytes())
    args = ["compile", str(path), "--target", target, "--precision", "int8"]
    result = CliRunner().invoke(
        main, [*args, "--quant-mode", "dynamic", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert "--quant-mode" in result.output


def test_quant_mode_needs_int8(tmp_path: Path) -> None:
    path = tmp_path / "bert.onnx"
    path.write_bytes(bert_bytes())
    result = CliRunner().invoke(
        main, ["compile", str(path), "--quant-mode", "dynamic", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output


def test_dynamic_int8_names_the_layers_gptq_skipped(
    bert: ir.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hessian cap (rounding.MAX_HESSIAN_BYTES) in dynamic mode: the layers over it keep
    nearest rounding and the summary says which and why, as static INT8's does."""
    from passes.quantize import rounding

    _, full = quantize_dynamic(bert, _calib(), PtqOptions(samples=16), reduce_range=True)
    assert full.rounding_skipped == {}
    # hidden size 128, FFN 256: the 128-wide Hessians fit, each layer's FFN output one does not
    monkeypatch.setattr(rounding, "MAX_HESSIAN_BYTES", 128 * 128 * 8)
    q, summary = quantize_dynamic(bert, _calib(), PtqOptions(samples=16), reduce_range=True)
    assert len(summary.rounding_skipped) == 2  # one per layer
    assert all("rounded to nearest" in why for why in summary.rounding_skipped.values())
    assert _cosines(q).min() > 0.999
