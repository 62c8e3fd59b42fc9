"""Float16 storage emulation, and what it shows that onnxruntime's CPU hides: an
RMSNorm whose x^2 overflows float16 (onnxconverter-common converts it, this pass
keeps it float32)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx_ir as ir

from passes.precision import Fp16Options, Fp16Pass
from passes.precision.emulate import emulate_float16_storage
from tests.passes.precision import _models

SQUARE_ROOT = "g (float16[N,4] x) => (float16[N,4] y) { s = Mul(x, x) y = Sqrt(s) }"


def test_cpu_keeps_a_float32_island_that_emulation_stores_in_float16() -> None:
    proto = _models.build(SQUARE_ROOT)
    x = np.full((2, 4), 300.0, np.float32)  # 300^2 = 90000 > 65504
    (cpu,) = _models.run(proto, {"x": x})
    assert np.allclose(cpu.astype(np.float32), 300.0)  # never stored in float16 on the CPU
    emulated = ir.to_proto(emulate_float16_storage(ir.from_proto(proto)))
    onnx.checker.check_model(emulated, full_check=True)
    assert _models.io_types(emulated) == ([_models.F32], [_models.F32])
    (stored,) = _models.run(emulated, {"x": x})
    assert np.isinf(stored).all()
    (fine,) = _models.run(emulated, {"x": np.full((2, 4), 1.001, np.float32)})
    assert np.allclose(fine, np.float16(np.float16(1.001) ** 2) ** 0.5, rtol=1e-3)


RMS_NORM = """
g (float[N,16] x) => (float[N,16] y) {
  h = MatMul(x, w)
  two = Constant<value=float {2.0}>()
  sq = Pow(h, two)
  ms = ReduceMean<axes=[-1]>(sq)
  eps = Constant<value=float {1e-6}>()
  v = Add(ms, eps)
  r = Sqrt(v)
  y = Div(h, r)
}"""


def test_rmsnorm_overflow_kept_float32_where_onnxconverter_common_overflows() -> None:
    from onnxconverter_common import float16

    rng = np.random.default_rng(0)
    proto = _models.build(RMS_NORM, w=np.eye(16, dtype=np.float32))
    x = (rng.standard_normal((64, 16)) * 300).astype(np.float32)  # x^2 passes 65504
    (ref,) = _models.run(proto, {"x": x})
    for options in ({}, {"keep_op_types": (), "keep_norm_statistics": False}):
        result, after = _models.convert(proto, {"x": x}, keep_io_types=True, **options)
        assert {k.op_type for k in result.summary.kept} >= {"Pow", "ReduceMean"}
        (out,) = _models.run(emulate_float16_storage(ir.from_proto(after)), {"x": x})
        np.testing.assert_allclose(out, ref, atol=5e-3)
        assert result.summary.outputs["y"].max_abs_error < 5e-3  # reported under emulation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = float16.convert_float_to_float16(proto, keep_io_types=True)
    (cpu,) = _models.run(theirs, {"x": x})
    np.testing.assert_allclose(cpu, ref, atol=5e-3)  # the CPU hides the overflow
    (stored,) = _models.run(emulate_float16_storage(ir.from_proto(theirs)), {"x": x})
    assert np.abs(stored - ref).max() > 0.5  # rows whose x^2 overflowed normalize to 0


def test_emulation_leaves_the_model_alone() -> None:
    proto = _models.build(SQUARE_ROOT)
    model = ir.from_proto(proto)
    before = _models.serialized(model)
    emulate_float16_storage(model)
    assert _models.serialized(model) == before
    x = np.ones((2, 4), np.float32)
    converted = Fp16Pass({"x": x}, Fp16Options(validate=False))
    assert converted.options.validate is False
