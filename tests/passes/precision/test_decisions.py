"""FP16 decisions from the data: range (overflow), a node's own error, the rounding of
its inputs; and the refusals (float16 already, nothing float, bad options or data)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from passes.errors import PassInputError, PassOptionError
from passes.precision import FP16_MAX, MARK, Fp16Options, Fp16Pass
from tests.passes.precision import _models

RNG = np.random.default_rng(1)

OVERFLOW = """
g (float[N,8] x) => (float[N,8] y) {
  big = MatMul(x, w)
  scale = Constant<value=float {0.001}>()
  small = Mul(big, scale)
  y = Relu(small)
}"""


def _overflow_model() -> tuple[object, np.ndarray]:
    w = np.full((8, 8), 3.0e4, np.float32)  # |x @ w| reaches ~2e5, beyond float16's 65504
    x = RNG.standard_normal((16, 8)).astype(np.float32)
    return _models.build(OVERFLOW, w=w), x


def test_an_intermediate_beyond_float16_keeps_its_nodes_float32() -> None:
    proto, x = _overflow_model()
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True)
    kept = {k.op_type: k for k in result.summary.kept}
    assert set(kept) == {"MatMul", "Mul"}  # MatMul makes the value, Mul reads it
    assert all(k.reason == "range" for k in kept.values())
    assert "max_abs" in kept["MatMul"].detail and "> max_abs" in kept["Mul"].detail
    assert result.summary.converted == 1  # Relu, on values of ~200
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=0.2)
    # the MatMul in float16 overflows
    with np.errstate(over="ignore"):
        assert np.isinf(x.astype(np.float16) @ np.full((8, 8), 3e4, np.float16)).any()


def test_max_abs_is_a_choice_below_float16s_limit() -> None:
    text = """
    g (float[N,4] x) => (float[N,4] y) {
      a = Mul(x, k)
      y = Relu(a)
    }"""
    proto = _models.build(text, k=np.full(4, 5000.0, np.float32))  # |a| up to ~2e4
    x = RNG.standard_normal((16, 4)).astype(np.float32)
    strict, _ = _models.convert(proto, {"x": x}, keep_io_types=True)
    assert [k.reason for k in strict.summary.kept] == ["range", "range"]  # 16x headroom
    loose, _ = _models.convert(proto, {"x": x}, keep_io_types=True, max_abs=FP16_MAX)
    assert loose.summary.kept == () and loose.summary.converted == 2


def test_a_node_with_a_large_own_error_stays_float32_with_its_producer() -> None:
    # a - 1000 where a ~ 1000 +- 0.01: float16 rounds a to steps of 0.5, so the
    # difference is lost; float32 on float16-rounded a is no better, so the producer
    # of a (Add) stays float32 too, and with float32 inputs the result is exact
    text = """
    g (float[N,8] x) => (float[N,8] y) {
      a = Add(x, offset)
      y = Sub(a, offset)
    }"""
    offset = np.full(8, 1000.0, np.float32)
    proto = _models.build(text, offset=offset)
    x = (RNG.standard_normal((32, 8)) * 0.01).astype(np.float32)
    result, after = _models.convert(proto, {"x": x}, keep_io_types=True, max_abs=FP16_MAX)
    reasons = {k.op_type: k.reason for k in result.summary.kept}
    assert reasons == {"Sub": "error", "Add": "input_precision"}
    assert "float16 error" in next(k.detail for k in result.summary.kept if k.op_type == "Sub")
    (ref,) = _models.run(proto, {"x": x})
    (out,) = _models.run(after, {"x": x})
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_max_relative_error_sets_the_bar() -> None:
    proto = _models.build(
        "g (float[N,16] x) => (float[N,4] y) { y = MatMul(x, w) }",
        w=RNG.standard_normal((16, 4)).astype(np.float32),
    )
    x = RNG.standard_normal((16, 16)).astype(np.float32)
    default, _ = _models.convert(proto, {"x": x})
    assert default.summary.converted == 1
    assert 1e-5 < default.summary.largest_errors[0].error < 2e-3  # float16 rounding
    strict, _ = _models.convert(proto, {"x": x}, max_relative_error=1e-6)
    assert [k.reason for k in strict.summary.kept] == ["error"]
    assert not strict.modified


# --- refusals ---------------------------------------------------------------------------


def test_refuses_a_float16_model() -> None:
    proto = _models.build("g (float16[N,4] x) => (float16[N,4] y) { y = Relu(x) }")
    with pytest.raises(PassInputError, match="already has float16"):
        Fp16Pass({"x": np.ones((2, 4), np.float16)})(ir.from_proto(proto))
    cast = _models.build("g (float[N,4] x) => (float16[N,4] y) { y = Cast<to=10>(x) }")
    with pytest.raises(PassInputError, match="already has float16"):
        Fp16Pass({"x": np.ones((2, 4), np.float32)})(ir.from_proto(cast))


def test_leaves_a_model_it_converted_alone() -> None:
    proto, x = _overflow_model()
    first = Fp16Pass({"x": x})(ir.from_proto(proto))
    assert first.model.metadata_props[MARK] == "fp16"
    second = Fp16Pass({"x": x})(first.model)
    assert not second.modified and "already converted" in second.summary.note


def test_refuses_a_model_without_float32() -> None:
    proto = _models.build("g (int64[N,4] x) => (int64[N,4] y) { y = Add(x, x) }")
    with pytest.raises(PassInputError, match="no float32 tensors"):
        Fp16Pass({"x": np.ones((2, 4), np.int64)})(ir.from_proto(proto))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_abs": 0}, "max_abs"),
        ({"max_abs": 1e6}, "max_abs"),
        ({"max_abs": float("nan")}, "max_abs"),
        ({"max_relative_error": 0}, "max_relative_error"),
        ({"max_relative_error": -1}, "max_relative_error"),
        ({"samples": 0}, "samples"),
        ({"batch_size": 0}, "batch size"),
        ({"threads": -1}, "threads"),
        ({"exclude": "conv"}, "exclude"),
        ({"keep_op_types": "Pow"}, "keep_op_types"),
        ({"keep_op_types": ["Pow", 3]}, "keep_op_types"),
        ({"keep_io_types": "yes"}, "keep_io_types"),
        ({"validate": 1}, "validate"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(PassOptionError, match=message):
        Fp16Options(**options)  # type: ignore[arg-type]  # wrong types on purpose


def test_unknown_exclude_names_and_bad_data() -> None:
    proto, x = _overflow_model()
    with pytest.raises(PassOptionError, match="does not have: 'nope'"):
        Fp16Pass({"x": x}, Fp16Options(exclude=["nope"]))(ir.from_proto(proto))
    with pytest.raises(PassInputError, match="has shape"):
        Fp16Pass({"x": x[:, :4]})(ir.from_proto(proto))
    with pytest.raises(PassInputError, match="NaN or Inf"):
        Fp16Pass({"x": x * np.nan})(ir.from_proto(proto))
    with pytest.raises(PassInputError, match="no array for input"):
        Fp16Pass([{"y": x}])(ir.from_proto(proto))
    with pytest.raises(PassOptionError, match="Fp16Options"):
        Fp16Pass({"x": x}, {"keep_io_types": True})  # type: ignore[arg-type]  # on purpose


def test_a_node_onnxruntime_cannot_build_in_float16_stays_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime names the node it has no float16 kernel for; that node leaves the
    check model and stays float32, the others are still measured."""
    from passes import graph_tools

    real = graph_tools.ort_session
    refused: list[bytes] = []

    def session(model_bytes: bytes, **kwargs: object) -> object:
        if b"fp16_check" in model_bytes and not refused:
            refused.append(model_bytes)
            raise RuntimeError(
                "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an "
                "implementation for MatMul(13) node with name '0.fp16'"
            )
        return real(model_bytes, **kwargs)  # type: ignore[arg-type]  # the real signature

    monkeypatch.setattr(graph_tools, "ort_session", session)
    proto = _models.build(
        "g (float[N,16] x) => (float[N,4] y) { m = MatMul(x, w) y = Sigmoid(m) }",
        w=RNG.standard_normal((16, 4)).astype(np.float32),
    )
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    result = Fp16Pass({"x": x})(ir.from_proto(proto))
    assert refused
    kept = result.summary.kept  # type: ignore[attr-defined]  # Fp16PassResult
    assert [(k.op_type, k.reason) for k in kept] == [("MatMul", "no_kernel")]
    assert "Could not find an implementation" in kept[0].detail
    assert result.summary.converted == 1  # type: ignore[attr-defined]  # Sigmoid
