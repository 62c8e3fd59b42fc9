"""FuseGemmBatchNormPass: Gemm/MatMul → BatchNormalization folds into one Gemm."""

from __future__ import annotations

import numpy as np
import pytest

from passes.fusion import FuseGemmBatchNormPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


@pytest.mark.parametrize(
    ("attrs", "with_c"),
    [
        ("", True),
        ("<transB = 1>", True),
        ("<alpha = 0.5, beta = 2.0, transB = 1>", True),
        ("<transA = 1>", False),
        ("<beta = 0.0>", True),
    ],
)
def test_folds_into_gemm(kit, rng, attrs, with_c):
    trans_a, trans_b = "transA" in attrs, "transB = 1" in attrs
    a_shape = "float[5, N]" if trans_a else "float[N, 5]"
    text = f"""{HEADER}
    g ({a_shape} a) => (float[N, 6] y) {{
      z = Gemm {attrs} (a, B{", C" if with_c else ""})
      y = BatchNormalization (z, scale, bias, mean, var)
    }}"""
    inits = {"B": kit.normal(rng, *((6, 5) if trans_b else (5, 6))), **kit.bn_params(rng, 6)}
    if with_c:
        inits["C"] = kit.normal(rng, 6)
    out = kit.apply(FuseGemmBatchNormPass(), kit.build(text, **inits))
    assert kit.op_sequence(out.after) == ["Gemm"]
    assert len(out.after.graph.initializer) == 2


def test_folds_into_2d_matmul_float64(kit, rng):
    text = f"""{HEADER}
    g (double[N, 5] a) => (double[N, 6] y) {{
      z = MatMul (a, W)
      y = BatchNormalization (z, scale, bias, mean, var)
    }}"""
    model = kit.build(
        text, W=kit.normal(rng, 5, 6, dtype=np.float64), **kit.bn_params(rng, 6, np.float64)
    )
    out = kit.apply(FuseGemmBatchNormPass(), model, tol=kit.F64_TOL)
    assert kit.op_sequence(out.after) == ["Gemm"]
    assert [o.name for o in out.after.graph.output] == ["y"]


def test_matmul_output_name_is_kept_when_bn_feeds_another_node(kit, rng):
    text = f"""{HEADER}
    g (float[N, 5] a) => (float[N, 6] y) {{
      z = MatMul (a, W)
      b = BatchNormalization (z, scale, bias, mean, var)
      y = Relu (b)
    }}"""
    out = kit.apply(
        FuseGemmBatchNormPass(), kit.build(text, W=kit.normal(rng, 5, 6), **kit.bn_params(rng, 6))
    )
    assert kit.op_sequence(out.after) == ["Gemm", "Relu"]


@pytest.mark.parametrize(
    ("sig", "body", "reason"),
    [
        (
            "(float[N, 6, 5] a) => (float[N, 6, 6] y)",
            "z = MatMul (a, W)\n y = BatchNormalization (z, scale, bias, mean, var)",
            "rank 2",
        ),
        (
            "(float[N, 5] a) => (float[N, 6] y)",
            "r = Relu (a)\n z = MatMul (r, W)\n y = BatchNormalization (z, scale, bias, mean, var)",
            "rank 2",
        ),
        (
            "(float[N, 5] a) => (float[N, 6] y)",
            "z = MatMul (a, W)\n b = BatchNormalization (z, scale, bias, mean, var)\n"
            " w = MatMul (a, W)\n y = Add (b, w)",
            "shared",
        ),
        (
            "(float[N, 5] a) => (float[N, 6] y, float[N, 6] z)",
            "z = MatMul (a, W)\n y = BatchNormalization (z, scale, bias, mean, var)",
            "graph output",
        ),
        (
            "(float[N, 5] a, float[5, 6] W) => (float[N, 6] y)",
            "z = Gemm (a, W)\n y = BatchNormalization (z, scale, bias, mean, var)",
            "not a constant",
        ),
    ],
    ids=["matmul-rank-3", "matmul-unknown-rank", "shared-weight", "output-used", "input-weight"],
)
def test_refuses(kit, rng, sig, body, reason):
    inits = kit.bn_params(rng, 6)
    if "float[5, 6] W" not in sig:
        inits["W"] = kit.normal(rng, 5, 6)
    model = kit.build(f"{HEADER}\ng {sig} {{\n{body}\n}}", **inits)
    kit.assert_refused(FuseGemmBatchNormPass(), model, reason)
