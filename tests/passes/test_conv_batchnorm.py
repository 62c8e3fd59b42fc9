"""FuseConvBatchNormPass: Conv → BatchNormalization folds into the Conv."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from passes.fusion import FuseConvBatchNormPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def conv_bn(kit, rng, *, body: str, sig: str, bias: bool = True, **extra):
    inits = {"W": kit.normal(rng, 4, 3, 3, 3), **kit.bn_params(rng, 4), **extra}
    if bias:
        inits["B"] = kit.normal(rng, 4)
    return kit.build(f"{HEADER}\n{sig}\n{{\n{body}\n}}", **inits)


SIG = "g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y)"


@pytest.mark.parametrize("bias", [True, False])
def test_folds_into_conv(kit, rng, bias):
    inputs = "x, W, B" if bias else "x, W"
    body = f"""
      c = Conv <pads = [1, 1, 1, 1]> ({inputs})
      b = BatchNormalization <epsilon = 0.001> (c, scale, bias, mean, var)
      y = Relu (b)
    """
    out = kit.apply(FuseConvBatchNormPass(), conv_bn(kit, rng, body=body, sig=SIG, bias=bias))
    assert out.modified
    assert kit.op_sequence(out.after) == ["Conv", "Relu"]
    # Old weights and BN parameters are gone; the Conv has exactly W' and b'.
    assert len(out.after.graph.initializer) == 2
    assert out.error <= 1e-4


def test_bn_output_is_graph_output_keeps_name(kit, rng):
    body = """
      c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
      y = BatchNormalization (c, scale, bias, mean, var)
    """
    out = kit.apply(FuseConvBatchNormPass(), conv_bn(kit, rng, body=body, sig=SIG))
    assert kit.op_sequence(out.after) == ["Conv"]
    assert [o.name for o in out.after.graph.output] == ["y"]
    assert out.after.graph.node[0].output[0] == "y"


def test_depthwise_conv1d(kit, rng):
    text = f"""{HEADER}
    g (float[N, 6, 10] x) => (float[N, 6, 10] y) {{
      c = Conv <group = 6, pads = [1, 1]> (x, W)
      y = BatchNormalization (c, scale, bias, mean, var)
    }}"""
    model = kit.build(text, W=kit.normal(rng, 6, 1, 3), **kit.bn_params(rng, 6))
    out = kit.apply(FuseConvBatchNormPass(), model)
    assert kit.op_sequence(out.after) == ["Conv"]


def test_constant_node_parameters_are_constants(kit, rng):
    params = kit.bn_params(rng, 4)
    consts = "\n".join(
        f"{k} = Constant <value = float[4] {{{', '.join(map(str, v.tolist()))}}}> ()"
        for k, v in params.items()
    )
    text = f"""{HEADER}
    {SIG} {{
      {consts}
      c = Conv <pads = [1, 1, 1, 1]> (x, W)
      y = BatchNormalization (c, scale, bias, mean, var)
    }}"""
    out = kit.apply(FuseConvBatchNormPass(), kit.build(text, W=kit.normal(rng, 4, 3, 3, 3)))
    assert kit.op_sequence(out.after) == ["Conv"]


def test_two_convs_in_a_row(kit, rng):
    text = f"""{HEADER}
    g (float[N, 4, 8, 8] x) => (float[N, 4, 8, 8] y) {{
      c1 = Conv <pads = [1, 1, 1, 1]> (x, W1)
      b1 = BatchNormalization (c1, scale, bias, mean, var)
      c2 = Conv <pads = [1, 1, 1, 1]> (b1, W2)
      y = BatchNormalization (c2, scale, bias, mean, var)
    }}"""
    model = kit.build(
        text,
        W1=kit.normal(rng, 4, 4, 3, 3),
        W2=kit.normal(rng, 4, 4, 3, 3),
        **kit.bn_params(rng, 4),
    )
    out = kit.apply(FuseConvBatchNormPass(), model)
    assert kit.op_sequence(out.after) == ["Conv", "Conv"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (
            """c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
               b = BatchNormalization (c, scale, bias, mean, var)
               y = Add (b, c)""",
            "other users",
        ),
        (
            """c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
               b = BatchNormalization (c, scale, bias, mean, var)
               d = Conv <pads = [1, 1, 1, 1]> (x, W, B)
               y = Add (b, d)""",
            "shared",
        ),
        (
            """c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
               y, rm, rv = BatchNormalization <training_mode = 1> (c, scale, bias, mean, var)""",
            "training mode",
        ),
    ],
    ids=["conv-output-used-elsewhere", "shared-weight", "training-mode"],
)
def test_refuses(kit, rng, case, reason):
    kit.assert_refused(FuseConvBatchNormPass(), conv_bn(kit, rng, body=case, sig=SIG), reason)


def test_refuses_conv_output_that_is_a_graph_output(kit, rng):
    sig = "g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y, float[N, 4, 8, 8] c)"
    body = """c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
              y = BatchNormalization (c, scale, bias, mean, var)"""
    kit.assert_refused(
        FuseConvBatchNormPass(), conv_bn(kit, rng, body=body, sig=sig), "graph output"
    )


def test_refuses_weight_that_is_a_graph_input(kit, rng):
    sig = "g (float[N, 3, 8, 8] x, float[4, 3, 3, 3] W) => (float[N, 4, 8, 8] y)"
    body = """c = Conv <pads = [1, 1, 1, 1]> (x, W)
              y = BatchNormalization (c, scale, bias, mean, var)"""
    text = f"{HEADER}\n{sig}\n{{\n{body}\n}}"
    model = kit.build(text, **kit.bn_params(rng, 4))
    kit.assert_refused(FuseConvBatchNormPass(), model, "weight is not a constant")
    # An initializer that is also a graph input can be overridden: not a constant either.
    model = kit.build(text, W=kit.normal(rng, 4, 3, 3, 3), **kit.bn_params(rng, 4))
    kit.assert_refused(FuseConvBatchNormPass(), model, "weight is not a constant")


def test_refuses_non_constant_bn_parameter(kit, rng):
    sig = "g (float[N, 3, 8, 8] x, float[4] scale) => (float[N, 4, 8, 8] y)"
    body = """c = Conv <pads = [1, 1, 1, 1]> (x, W)
              y = BatchNormalization (c, scale, bias, mean, var)"""
    params = kit.bn_params(rng, 4)
    del params["scale"]
    model = kit.build(f"{HEADER}\n{sig}\n{{\n{body}\n}}", W=kit.normal(rng, 4, 3, 3, 3), **params)
    kit.assert_refused(FuseConvBatchNormPass(), model, "parameters are not constants")


def test_is_an_in_place_onnx_ir_pass():
    assert isinstance(FuseConvBatchNormPass(), ir.passes.InPlacePass)


def test_folds_inside_a_subgraph(kit, rng):
    text = f"""{HEADER}
    g (float[N, 3, 4] x, bool c) => (float[N, 3, 4] y) {{
      y = If (c) <then_branch = t () => (float[N, 3, 4] ty) {{
          ty = Relu (x)
      }}, else_branch = e () => (float[N, 3, 4] ey) {{
          z = Conv (x, W)
          ey = BatchNormalization (z, scale, bias, mean, var)
      }}>
    }}"""
    model = kit.build(text, W=kit.normal(rng, 3, 3, 1), **kit.bn_params(rng, 3))
    feeds = {"x": kit.normal(rng, 2, 3, 4), "c": np.array(False)}
    out = kit.apply(FuseConvBatchNormPass(), model, feeds=feeds)
    else_branch = out.after.graph.node[0].attribute[1].g
    assert [n.op_type for n in else_branch.node] == ["Conv"]
    assert len(else_branch.initializer) == 2 and not out.after.graph.initializer
