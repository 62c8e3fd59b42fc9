"""check_equivalent: random-input comparison of two models with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from passes.errors import PassInputError
from passes.verify import PassChangedFunction, check_equivalent

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_identical_models_have_zero_error(kit, rng):
    text = f"{HEADER}\ng (float[N, 4] x) => (float[N, 3] y) {{ y = MatMul (x, W) }}"
    proto = kit.build(text, W=kit.normal(rng, 4, 3))
    assert check_equivalent(proto, ir.from_proto(proto)) == 0.0


def test_a_different_function_raises_naming_the_output(kit):
    a = kit.build(
        f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) "
        "{ y = Relu (x)\n z = Neg (x) }"
    )
    b = kit.build(
        f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) "
        "{ y = Relu (x)\n z = Abs (x) }"
    )
    with pytest.raises(PassChangedFunction, match=r"output 'z' .*max abs error"):
        check_equivalent(a, b)
    assert issubclass(PassChangedFunction, AssertionError)


def test_small_differences_within_tolerance(kit, rng):
    text = f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) {{ y = Mul (x, s) }}"
    s = np.full(4, 1.0, np.float32)
    a = kit.build(text, s=s)
    b = kit.build(text, s=s + 1e-6)
    error = check_equivalent(a, b)
    assert 0.0 < error < 1e-4
    with pytest.raises(PassChangedFunction):
        check_equivalent(a, b, rtol=0.0, atol=1e-9)


def test_dtype_aware_inputs_and_dynamic_dims(kit):
    text = f"""{HEADER}
    g (float[N, T] x, int64[N] idx, bool[N, T] m) => (float[N] y, float[N, T] z) {{
      g = Gather <axis = 1> (x, idx)
      y = ReduceSum <keepdims = 0> (g, one)
      z = Where (m, x, x)
    }}"""
    proto = kit.build(text, one=np.array([1]))
    # Batch 2 on axis 0, 4 for the other dynamic dim; indices 0..3 stay in range.
    assert check_equivalent(proto, proto, batch=2) == 0.0


def test_explicit_feeds(kit):
    proto = kit.build(f"{HEADER}\ng (float[N] x) => (float[N] y) {{ y = Sqrt (x) }}")
    feeds = {"x": np.array([1.0, 4.0, 9.0], np.float32)}
    assert check_equivalent(proto, proto, feeds=feeds) == 0.0


def test_output_shape_change_raises(kit):
    a = kit.build(f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) {{ y = Relu (x) }}")
    b = kit.build(
        f"{HEADER}\ng (float[N, 4] x) => (float[N, 1] y) "
        "{ y = ReduceMax <axes = [1], keepdims = 1> (x) }"
    )
    with pytest.raises(PassChangedFunction, match="changed from"):
        check_equivalent(a, b)


def test_an_input_it_cannot_draw_is_an_input_error(kit):
    proto = kit.build(f"{HEADER}\ng (string[N] s) => (string[N] t) {{ t = Identity (s) }}")
    with pytest.raises(PassInputError, match="pass it in `feeds`"):
        check_equivalent(proto, proto)
    feeds = {"s": np.array(["a", "b"], dtype=object)}
    assert check_equivalent(proto, proto, feeds=feeds) == 0.0
