"""FuseMatMulAddPass: MatMul(x, W) + c becomes Gemm(x, W, c) for rank-2 x."""

from __future__ import annotations

import numpy as np
import pytest

from passes.fusion import FuseMatMulAddPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


@pytest.mark.parametrize(
    ("add", "c_shape"),
    [("Add (z, c)", (6,)), ("Add (c, z)", (6,)), ("Add (z, c)", (1, 6)), ("Add (z, c)", ())],
    ids=["bias-right", "bias-left", "bias-1xN", "bias-scalar"],
)
def test_fuses_to_gemm(kit, rng, add, c_shape):
    text = f"""{HEADER}
    g (float[N, 5] x) => (float[N, 6] y) {{
      z = MatMul (x, W)
      y = {add}
    }}"""
    model = kit.build(text, W=kit.normal(rng, 5, 6), c=kit.normal(rng, *c_shape))
    out = kit.apply(FuseMatMulAddPass(), model)
    assert kit.op_sequence(out.after) == ["Gemm"]
    assert out.after.graph.node[0].output[0] == "y"


def test_float64_and_downstream_users(kit, rng):
    text = f"""{HEADER}
    g (double[N, 5] x) => (double[N, 6] y) {{
      z = MatMul (x, W)
      b = Add (z, c)
      y = Relu (b)
    }}"""
    model = kit.build(
        text, W=kit.normal(rng, 5, 6, dtype=np.float64), c=kit.normal(rng, 6, dtype=np.float64)
    )
    out = kit.apply(FuseMatMulAddPass(), model, tol=kit.F64_TOL)
    assert kit.op_sequence(out.after) == ["Gemm", "Relu"]
    assert out.error == 0.0


def test_shared_weight_is_fine(kit, rng):
    text = f"""{HEADER}
    g (float[N, 5] x) => (float[N, 6] y) {{
      z = MatMul (x, W)
      b = Add (z, c)
      w = MatMul (x, W)
      y = Add (b, w)
    }}"""
    out = kit.apply(
        FuseMatMulAddPass(), kit.build(text, W=kit.normal(rng, 5, 6), c=kit.normal(rng, 6))
    )
    assert kit.op_counts(out.after) == {"Gemm": 1, "MatMul": 1, "Add": 1}


@pytest.mark.parametrize(
    ("sig", "body", "reason"),
    [
        (
            "(float[N, 4, 5] x) => (float[N, 4, 6] y)",
            "z = MatMul (x, W)\n y = Add (z, c)",
            "rank 2",
        ),
        (
            "(float[N, 5] x) => (float[N, 6] y)",
            "r = Relu (x)\n z = MatMul (r, W)\n y = Add (z, c)",
            "rank 2",
        ),
        (
            "(float[N, 5] x, float[5, 6] V) => (float[N, 6] y)",
            "z = MatMul (x, V)\n y = Add (z, c)",
            "weight is not a constant",
        ),
        (
            "(float[N, 5] x) => (float[N, 6] y)",
            "z = MatMul (x, W)\n b = Add (z, c)\n y = Mul (b, z)",
            "other users",
        ),
        (
            "(float[N, 5] x) => (float[N, 6] y, float[N, 6] z)",
            "z = MatMul (x, W)\n y = Add (z, c)",
            "other users",
        ),
        (
            "(float[3, 5] x) => (float[3, 6] y)",
            "z = MatMul (x, W)\n y = Add (z, c3)",
            "does not broadcast",
        ),
    ],
    ids=[
        "rank-3",
        "unknown-rank",
        "input-weight",
        "matmul-used",
        "matmul-graph-output",
        "bias-MxN",
    ],
)
def test_refuses(kit, rng, sig, body, reason):
    inits = {"W": kit.normal(rng, 5, 6), "c": kit.normal(rng, 6), "c3": kit.normal(rng, 3, 6)}
    text = f"{HEADER}\ng {sig} {{\n{body}\n}}"
    used = {k: v for k, v in inits.items() if f"{k})" in body or f"{k} " in body}
    kit.assert_refused(FuseMatMulAddPass(), kit.build(text, **used), reason)
