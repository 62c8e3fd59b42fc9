"""Small ONNX graphs for the TensorRT target tests, written in ONNX text syntax.

`qdq_conv(...)` builds x → Q → DQ → Conv(DQ(w_q)) in the form TensorRT takes
(symmetric int8, zero point 0, weights per output channel) unless a keyword
breaks one rule, so each refusal test changes exactly one thing.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper, numpy_helper

# ir_version 8: onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default.
HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def parse(body: str, **initializers: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + body)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in initializers.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def static_mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return parse(
        """
        mlp (float[1, 8] x) => (float[1, 4] y) {
          h = MatMul (x, W)
          y = Relu (h)
        }
        """,
        W=rng.standard_normal((8, 4)).astype(np.float32),
    )


def dynamic_mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return parse(
        """
        mlp (float[N, 8] x) => (float[N, 4] y) {
          h = MatMul (x, W)
          y = Relu (h)
        }
        """,
        W=rng.standard_normal((8, 4)).astype(np.float32),
    )


def fp16_mlp(*, keep_io_types: bool = False) -> onnx.ModelProto:
    """`dynamic_mlp` as an FP16 pass leaves it: float16 weights and math; with
    `keep_io_types`, float32 I/O and casts at the edges."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float16)
    if keep_io_types:
        return parse(
            """
            mlp (float[N, 8] x) => (float[N, 4] y) {
              xh = Cast <to = 10> (x)
              h = MatMul (xh, W)
              r = Relu (h)
              y = Cast <to = 1> (r)
            }
            """,
            W=w,
        )
    return parse(
        """
        mlp (float16[N, 8] x) => (float16[N, 4] y) {
          h = MatMul (x, W)
          y = Relu (h)
        }
        """,
        W=w,
    )


_ZERO_I8 = np.int8(0)


def qdq_conv(
    *,
    x_zp: np.ndarray | np.integer | None = _ZERO_I8,
    w_zp: np.ndarray | None = None,
    w_axis: int = 0,
    w_dtype: type = np.int8,
    x_scale: np.ndarray | None = None,
    batch: str = "N",
) -> onnx.ModelProto:
    """Conv 4→4 channels, 3x3, on an 8x8 image; Q/DQ on the input and the weight."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, size=(4, 4, 3, 3)).astype(w_dtype)
    inits: dict[str, np.ndarray] = {
        "x_scale": np.float32(0.02) if x_scale is None else x_scale,
        "w_q": w,
        "w_scale": (rng.uniform(0.5, 1.5, size=4) / 127).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
    }
    if x_zp is not None:
        inits["x_zp"] = x_zp
    inits["w_zp"] = np.zeros(4, dtype=w_dtype) if w_zp is None else w_zp
    x_args = "x, x_scale, x_zp" if x_zp is not None else "x, x_scale"
    xq_args = "xq, x_scale, x_zp" if x_zp is not None else "xq, x_scale"
    return parse(
        f"""
        qconv (float[{batch}, 4, 8, 8] x) => (float[{batch}, 4, 6, 6] y) {{
          xq = QuantizeLinear ({x_args})
          xd = DequantizeLinear ({xq_args})
          wd = DequantizeLinear <axis = {w_axis}> (w_q, w_scale, w_zp)
          y = Conv (xd, wd, b)
        }}
        """,
        **inits,
    )


def with_metadata(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    onnx.helper.set_model_props(out, props)
    return out


def single_node(
    op: str,
    inputs: list[tuple[str, int, list[object]]],
    outputs,
    opset: int = 17,
    domain: str = "",
    **attrs: object,
) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """One `op` node between typed graph inputs and outputs (helper-built, no checker)."""
    node = helper.make_node(
        op, [n for n, _, _ in inputs], [n for n, _, _ in outputs], domain=domain, name="n0", **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


F32 = TensorProto.FLOAT
