"""GELU written out in elementary ops → the standard ONNX `Gelu` (opset 20+).

Rewrites (patterns are onnxscript's, from `ort_fusions.gelu` and `ort_fusions.erfgelu`;
only the replacement differs: the standard op instead of the com.microsoft one)::

    0.5 * x * (1 + Erf(x / sqrt(2)))                      ->  Gelu(x)
    0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))  ->  Gelu(x, approximate="tanh")

Math: these are the definitions of ONNX Gelu with approximate "none" and "tanh".
For runtimes without onnxruntime's contrib ops (TensorRT), where the contrib
`Gelu`/`FastGelu` would not parse.

Refuses: models below opset 20 (Gelu entered the standard then); whatever the
library patterns refuse (constants other than 0.5, 1, sqrt(2), sqrt(2/pi), 0.044715).
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions import erfgelu, gelu

#: Gelu is in the ONNX standard from this opset
GELU_OPSET = 20


class OnnxGeluErf(gelu.GeluErfFusion):
    """Exact (erf) GELU → Gelu."""

    def rewrite(self, op: Any, x: ir.Value, **_: Any) -> ir.Value:
        return op.Gelu(x)


class OnnxGeluTanh(gelu.GeluTanhFusion):
    """Tanh-approximated GELU → Gelu(approximate="tanh")."""

    def rewrite(self, op: Any, x: ir.Value, **_: Any) -> ir.Value:
        return op.Gelu(x, approximate="tanh")


def _gelu(op: Any, x: ir.Value) -> ir.Value:
    return op.Gelu(x)


rules = pattern.RewriteRuleSet(
    [
        OnnxGeluErf.rule(),
        OnnxGeluTanh.rule(),
        pattern.RewriteRule(erfgelu.erf_gelu_pattern_1, _gelu),
        pattern.RewriteRule(erfgelu.erf_gelu_pattern_2, _gelu),
    ]
)
