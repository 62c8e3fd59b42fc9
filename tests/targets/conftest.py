"""A tiny Gemm → Relu → MatMul model with its numpy reference, for the target tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest
from onnx import numpy_helper

# ir_version 8: onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default.
GEMM_RELU_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
gemm_relu (float[N, 8] x) => (float[N, 4] y) {
  h = Gemm <transB = 1> (x, W, B)
  r = Relu (h)
  y = MatMul (r, W2t)
}
"""


@dataclass(frozen=True)
class TinyModel:
    proto: onnx.ModelProto
    reference: Callable[[np.ndarray], np.ndarray]

    def ir(self) -> ir.Model:
        return ir.from_proto(self.proto)


@pytest.fixture(scope="module")
def gemm_relu() -> TinyModel:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    w2t = rng.standard_normal((16, 4)).astype(np.float32)
    proto = onnx.parser.parse_model(GEMM_RELU_TEXT)
    proto.graph.initializer.extend(
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(w2t, "W2t"),
        ]
    )
    onnx.checker.check_model(proto, full_check=True)

    def reference(x: np.ndarray) -> np.ndarray:
        x64 = x.astype(np.float64)
        return np.maximum(x64 @ w.T + b, 0.0) @ w2t

    return TinyModel(proto=proto, reference=reference)
