"""Put a 1-D constant bias second: `Add(b, x)` → `Add(x, b)`.

onnxscript's SkipLayerNormalization rules take the projection bias as `Add(x, b)`;
torch's TorchScript exporter writes `Add(b, x @ W)`. Addition commutes (and
broadcasting is symmetric), so the swap keeps the values, shapes and dtypes.

Refuses: the first input is not a 1-D constant, or the second is a constant too
(constant folding's business, not this rule's).
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern


class BiasLast(pattern.RewriteRuleClassBase):
    """Add(b, x) → Add(x, b) for a 1-D constant b and a computed x."""

    def pattern(self, op: Any, bias: ir.Value, x: ir.Value) -> ir.Value:
        return op.Add(bias, x)

    def check(self, op: Any, bias: ir.Value, x: ir.Value, **_: Any) -> MatchResult:
        result = MatchResult()
        const = ir.convenience.get_const_tensor(bias)
        if const is None or len(const.shape) != 1:
            return result.fail("the first input is not a 1-D constant")
        if ir.convenience.get_const_tensor(x) is not None:
            return result.fail("both inputs are constants")
        return result

    def rewrite(self, op: Any, bias: ir.Value, x: ir.Value, **_: Any) -> ir.Value:
        return op.Add(x, bias)


rules = pattern.RewriteRuleSet([BiasLast.rule()])
