"""FP16 on real models, run by onnxruntime's CPU provider against float32.

Zoo models with their real weights (digits_cnn, digits_gru, mobilenet_v2; exported
and optimized as the compiler does) on their held-out data, and two architectures
nobody here wrote: transformers' BERT and GPT-2, random init (no download), dynamic
batch and sequence, checked on shapes the calibration never saw.

Bounds: top-1 agreement with float32 >= 0.99 (classifiers); transformers: cosine
>= 0.999 and max |error| <= 0.05 on hidden states of RMS ~1 (LayerNorm outputs:
float16's step at 4 is 0.004); artifact 0.45-0.6x of float32.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.passes.precision import _models

TRANSFORMER_MAX_ABS_ERROR = 0.05


@functools.cache
def _zoo(name: str) -> onnx.ModelProto:
    from compiler.export import export_torch
    from compiler.stages.optimize import optimize
    from models.registry import get_model

    spec = get_model(name)
    example = spec.calibration_data(1)
    proto = export_torch(
        spec.build(),
        [example],
        input_names=[spec.inputs[0].name],
        output_names=list(spec.output_names),
    )
    model, _ = optimize(ir.from_proto(proto))
    return ir.to_proto(model)


def _classifier(name: str, calibration: int, evaluation: int) -> None:
    from models.registry import get_model

    spec = get_model(name)
    proto = _zoo(name)
    feed = spec.inputs[0].name
    cal = spec.calibration_data(calibration)
    x, _ = spec.evaluation_data(evaluation)
    result, after = _models.convert(proto, {feed: cal}, samples=calibration, batch_size=4)
    (ref,) = _models.run(proto, {feed: x})
    (out,) = _models.run(after, {feed: x})
    agreement = float((ref.argmax(1) == out.argmax(1)).mean())
    assert agreement >= 0.99, agreement
    assert _models.cosine(out, ref) >= 0.999
    assert 0.45 <= _models.size_ratio(after, proto) <= 0.6
    assert result.summary.outputs[spec.output_names[0]].agreement == 1.0


def test_digits_cnn() -> None:
    _classifier("digits_cnn", 64, 256)


def test_digits_gru() -> None:
    _classifier("digits_gru", 64, 256)


def test_mobilenet_v2_small() -> None:
    _classifier("mobilenet_v2", 8, 16)


@pytest.mark.slow
def test_mobilenet_v2() -> None:
    _classifier("mobilenet_v2", 64, 128)


def _transformer(
    proto: onnx.ModelProto, feeds: object, calibration: list[dict[str, np.ndarray]]
) -> None:
    result, after = _models.convert(proto, calibration)
    assert result.summary.converted > 50
    for batch in feeds:  # type: ignore[attr-defined]  # a list of feeds
        ref = _models.run(proto, batch)
        out = _models.run(after, batch)
        for r, o in zip(ref, out, strict=True):
            assert o.dtype == np.float16  # float16 I/O
            assert _models.cosine(o, r) >= 0.999
            assert np.abs(o.astype(np.float32) - r).max() <= TRANSFORMER_MAX_ABS_ERROR
    assert 0.45 <= _models.size_ratio(after, proto) <= 0.6


def test_bert_random_init_dynamic_shapes() -> None:
    proto = onnx.load_from_string(_models.bert_bytes())
    rng = np.random.default_rng(0)
    calibration = [_models.bert_feeds(rng, 4, 16) for _ in range(2)]
    feeds = [_models.bert_feeds(rng, 3, 24), _models.bert_feeds(rng, 1, 7)]
    _transformer(proto, feeds, calibration)


def test_gpt2_random_init_dynamic_shapes() -> None:
    proto = onnx.load_from_string(_models.gpt2_bytes())
    rng = np.random.default_rng(0)
    calibration = [_models.gpt2_feeds(rng, 4, 16) for _ in range(2)]
    feeds = [_models.gpt2_feeds(rng, 3, 24), _models.gpt2_feeds(rng, 1, 7)]
    _transformer(proto, feeds, calibration)
