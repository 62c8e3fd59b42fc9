"""Small graphs for the quantization tests, written in ONNX text syntax.

Weights are seeded random arrays attached as initializers after parsing (the
text syntax has no compact way to write them); every node gets a stable name
(``<op>_<index>``) so tests can exclude nodes by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'

# Conv → Relu → depthwise Conv → Clip(0, 6) → 1x1 Conv → Add (residual) → GAP → Flatten → Gemm,
# the shape of a MobileNetV2 block with its head.
BLOCK = f"""{HEADER}
block (float[N, 3, 8, 8] x) => (float[N, 10] y) {{
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <group = 8, pads = [1, 1, 1, 1]> (r1, w2, b2)
  r2 = Clip (c2, lo, hi)
  c3 = Conv (r2, w3, b3)
  s = Add (c3, r1)
  p = GlobalAveragePool (s)
  f = Flatten (p)
  y = Gemm <transB = 1> (f, w4, b4)
}}"""

# A residual stream of two chained Adds (MobileNetV2's stages of three blocks).
STREAM = f"""{HEADER}
stream (float[N, 3, 8, 8] x) => (float[N, 10] y) {{
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  a1 = Conv (c1, w3, b3)
  s1 = Add (a1, c1)
  a2 = Conv (s1, w5, b5)
  s2 = Add (a2, s1)
  c4 = Conv (s2, w6, b6)
  p = GlobalAveragePool (c4)
  f = Flatten (p)
  y = Gemm <transB = 1> (f, w4, b4)
}}"""

# Gemm without transB and a MatMul with a constant right operand.
DENSE = f"""{HEADER}
dense (float[N, 16] x) => (float[N, 6] y) {{
  h = Gemm (x, wg, bg)
  r = Relu (h)
  y = MatMul (r, wm)
}}"""


def block_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "w1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(f),
        "b1": (rng.standard_normal(8) * 0.1).astype(f),
        # very different channel gains, as in MobileNetV2's depthwise layers
        "w2": (
            rng.standard_normal((8, 1, 3, 3)) * np.geomspace(0.05, 2.0, 8)[:, None, None, None]
        ).astype(f),
        "b2": (rng.standard_normal(8) * 0.1).astype(f),
        "lo": np.array(0.0, f),
        "hi": np.array(6.0, f),
        "w3": (rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(f),
        "b3": (rng.standard_normal(8) * 0.1).astype(f),
        "w4": (rng.standard_normal((10, 8)) * 0.5).astype(f),
        "b4": (rng.standard_normal(10) * 0.1).astype(f),
    }


def stream_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    f = np.float32
    extra = {
        name: (rng.standard_normal(shape) * 0.3).astype(f)
        for name, shape in (("w5", (8, 8, 1, 1)), ("b5", (8,)), ("w6", (8, 8, 1, 1)), ("b6", (8,)))
    }
    w = block_weights(seed)
    return {k: w[k] for k in ("w1", "b1", "w3", "b3", "w4", "b4")} | extra


def dense_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "wg": (rng.standard_normal((16, 12)) * 0.3).astype(f),
        "bg": (rng.standard_normal(12) * 0.1).astype(f),
        "wm": (rng.standard_normal((12, 6)) * 0.3).astype(f),
    }


def from_text(text: str, weights: dict[str, np.ndarray]) -> ir.Model:
    """Parse `text`, attach `weights` as initializers, name every node `<op>_<i>`."""
    proto = onnx.parser.parse_model(text)
    for name, arr in weights.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(arr, name))
    onnx.checker.check_model(proto, full_check=True)
    model = ir.from_proto(proto)
    for i, node in enumerate(model.graph):
        node.name = f"{node.op_type}_{i}"
    return model


def block_model(seed: int = 0) -> ir.Model:
    return from_text(BLOCK, block_weights(seed))


def stream_model(seed: int = 0) -> ir.Model:
    return from_text(STREAM, stream_weights(seed))


def dense_model(seed: int = 0) -> ir.Model:
    return from_text(DENSE, dense_weights(seed))


def images(n: int, seed: int = 1) -> np.ndarray:
    """Smooth positive-ish inputs (like normalized photos) for the block model."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(base, 2, axis=2), 2, axis=3) + 0.1 * rng.standard_normal(
        (n, 3, 8, 8)
    ).astype(np.float32)


def run(model: ir.Model, feeds: dict[str, np.ndarray], *, optimize: bool = False) -> np.ndarray:
    from passes import graph_tools

    return graph_tools.ort_session(
        graph_tools.model_bytes(model), threads=1, optimize=optimize
    ).run(None, feeds)[0]


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(
        10
        * np.log10(
            (ref.astype(np.float64) ** 2).sum() / ((ref - out).astype(np.float64) ** 2).sum()
        )
    )


def ort_optimized(
    model: ir.Model, directory: Path, level: str = "ORT_ENABLE_EXTENDED"
) -> onnx.ModelProto:
    """The graph onnxruntime runs after its optimizations up to `level`."""
    import onnxruntime as ort

    from passes import graph_tools

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.optimized_model_filepath = str(directory / "optimized.onnx")
    ort.InferenceSession(graph_tools.model_bytes(model), opts, providers=["CPUExecutionProvider"])
    return onnx.load(directory / "optimized.onnx")


def optimized_ops(
    model: ir.Model, directory: Path, level: str = "ORT_ENABLE_EXTENDED"
) -> list[str]:
    """The op types of `ort_optimized`'s graph, in order."""
    return [n.op_type for n in ort_optimized(model, directory, level).graph.node]
