"""Decomposed LayerNorm → the standard `LayerNormalization` (opset 17+).

Rewrites (onnxscript's `rules.fusion._layer_norm` patterns)::

    Mul((x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps), scale)  ->  LayerNormalization(x, scale)
    LayerNormalization(x, scale) + bias                            ->  LayerNormalization(x, scale, bias)

over the last axis. Math: the definition of LayerNormalization with axis -1.

Refuses, beyond the library's own checks (float/double input, constant scalar
epsilon): a scale or bias that is not 1-D of the normalized size (a [batch, seq,
hidden] "bias" would broadcast differently inside LayerNormalization than after
it); models below opset 17 (the op is not standard there). The library pattern
matches ReduceMean with its axes as an input (opset 18+); the attribute form of
older exporters is left as it is.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleSet
from onnxscript.rewriter.rules.fusion import _layer_norm

#: LayerNormalization is in the ONNX standard from this opset
LAYER_NORM_OPSET = 17


def _is_vector_of(value: ir.Value | None, like: ir.Value) -> bool:
    """`value` is 1-D and, where both are known, as long as `like`'s last axis."""
    if value is None or value.shape is None or len(value.shape) != 1:
        return False
    if like.shape is None or len(like.shape) == 0:
        return True
    last, size = like.shape[-1], value.shape[0]
    return not (isinstance(last, int) and isinstance(size, int) and last != size)


class LayerNormFusion(_layer_norm.LayerNormFusion):
    """The library rule, refusing a scale that is not a vector over the last axis."""

    def check(self, context: Any, x: Any, epsilon: Any, **bindings: Any) -> Any:  # type: ignore[override]  # the library's form

        scale = bindings["scale"]
        if not _is_vector_of(scale, x):
            return MatchResult().fail("scale is not a vector over the last axis", scale)
        return super().check(context, x, epsilon, **bindings)


class LayerNormBiasFusion(_layer_norm.LayerNormBiasFusion):
    """The library rule, refusing a bias that is not a vector over the last axis."""

    def check(self, op: Any, *args: Any, **bindings: Any) -> MatchResult:
        bias, x = bindings["bias"], bindings["x"]
        if not _is_vector_of(bias, x):
            return MatchResult().fail("bias is not a vector over the last axis", bias)
        return MatchResult()


rules = RewriteRuleSet([LayerNormFusion.rule(), LayerNormBiasFusion.rule()])
