"""Make the zero of a softmax NaN guard a scalar, so onnxscript's SDPA rule sees it.

Rewrite::

    Where(IsNaN(p), Constant([0.0]), p)   ->   Where(IsNaN(p), Constant(0.0), p)

torch's TorchScript exporter writes ``scaled_dot_product_attention`` with this
guard after the Softmax (a fully masked row gives NaN; the guard makes it 0), and
writes the zero as a one-element 1-D tensor. onnxscript's SDPA pattern expects the
scalar 0.0 and refuses the 1-D form. Math: `Where` broadcasts the [1] constant to
p's shape, exactly as it broadcasts the scalar, so the output is the same bit for
bit (values and shape) whenever p has rank ≥ 1.

Refuses: the constant is not a single element equal to 0, is already a scalar
(nothing to do: the rule is idempotent), or p's rank is unknown or 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern


class ScalarNanGuardZero(pattern.RewriteRuleClassBase):
    """Where(IsNaN(p), [0], p) → Where(IsNaN(p), 0, p)."""

    def pattern(self, op: Any, p: ir.Value, zero: ir.Value) -> ir.Value:
        return op.Where(op.IsNaN(p), zero, p)

    def check(self, op: Any, *args: Any, **bindings: Any) -> MatchResult:
        p, zero = bindings["p"], bindings["zero"]
        result = MatchResult()
        const = ir.convenience.get_const_tensor(zero)
        if const is None:
            return result.fail("the replacement value is not a constant", zero)
        array = const.numpy()
        if array.size != 1 or array.item() != 0:
            return result.fail("the replacement value is not a single 0", zero)
        if array.ndim == 0:
            return result.fail("already a scalar", zero)
        if p.shape is None or len(p.shape) < array.ndim:
            return result.fail("the guarded tensor's rank is unknown or below the constant's", p)
        return result

    def rewrite(self, op: Any, p: ir.Value, zero: ir.Value, **_: Any) -> ir.Value:
        const = ir.convenience.get_const_tensor(zero)
        assert const is not None
        scalar = ir.tensor(np.zeros((), dtype=const.dtype.numpy()))
        return op.Where(op.IsNaN(p), op.Constant(value=scalar), p)


rules = pattern.RewriteRuleSet([ScalarNanGuardZero.rule()])
