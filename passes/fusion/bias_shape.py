"""Read the shape of a projection before its bias, so the bias can join attention.

Rewrites::

    Shape(Add(x, bias))        ->   Shape(x)
    Shape(x @ W)[start:end]    ->   Shape(x)[start:end]     (end before the last axis)
    Shape(x @ W)               ->   Shape(x)                (only Gathered before the last axis)

torch's TorchScript exporter writes BERT's head split as ``view(q.size()[:-1] + (h, d))``:
a Shape of the biased projection ``q = x @ W + b``. That second reader of the Add keeps
onnxscript's bias → MultiHeadAttention rule (and so the packed-QKV Attention rule) from
matching, since a fused pattern's inner values may have no reader outside it (all-MiniLM:
0 of 6 biases fused, 36 MatMuls and 32 Adds left where onnxruntime's optimizer leaves 18
and 2). Math: broadcasting a 1-D bias of x's last dimension's size (or of size 1) leaves
x's shape unchanged, so both Shapes give the same values.

The second rewrite does the same for the projection itself, which the packed-QKV
Attention rule swallows: a 2-D constant W changes only the last dimension.

Refuses: the bias is not a 1-D constant; x's rank or last dimension is unknown; the bias
size is neither 1 nor x's last dimension; a projection's Shape slice reaches the last
axis (or has no end).
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern


class ShapeBeforeBias(pattern.RewriteRuleClassBase):
    """Shape(x + b) → Shape(x) for a 1-D constant b that does not broadcast x.

    The Add is not part of the pattern (it has other readers, and a pattern's inner
    nodes may have none): the rule matches the Shape and checks its input's producer.
    """

    def pattern(self, op: Any, biased: ir.Value) -> ir.Value:
        return op.Shape(
            biased,
            start=pattern.AttrVar("start", can_match_none=True),
            end=pattern.AttrVar("end", can_match_none=True),
        )

    def check(self, op: Any, *args: Any, **bindings: Any) -> MatchResult:
        result = MatchResult()
        split = _split_bias(bindings["biased"])
        if split is None:
            return result.fail("the input is not x + a 1-D constant of x's last dimension")
        return result

    def rewrite(
        self, op: Any, biased: ir.Value, start: Any = None, end: Any = None, **_: Any
    ) -> ir.Value:
        split = _split_bias(biased)
        assert split is not None
        attributes = {
            name: attr.value for name, attr in (("start", start), ("end", end)) if attr is not None
        }
        return op.Shape(split, **attributes)


def _split_bias(biased: ir.Value) -> ir.Value | None:
    """x when `biased` = Add(x, b) or Add(b, x) with b a 1-D constant of size 1 or of x's
    (known) last dimension, else None."""
    node = biased.producer()
    if node is None or node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
        return None
    for x, bias in (node.inputs, reversed(node.inputs)):
        const = ir.convenience.get_const_tensor(bias) if bias is not None else None
        if const is None or len(const.shape) != 1 or x is None or x.shape is None:
            continue
        if len(x.shape) < 1:
            continue
        size, last = const.shape[0], x.shape[-1]
        if size == 1 or (isinstance(last, int) and last == size):
            return x
    return None


class ShapeBeforeProjection(pattern.RewriteRuleClassBase):
    """Shape(x @ W)[start:end] → Shape(x)[start:end] when the slice stops before the last
    axis and W is a 2-D constant: the projection changes only the last dimension."""

    def pattern(self, op: Any, projected: ir.Value) -> ir.Value:
        return op.Shape(
            projected,
            start=pattern.AttrVar("start", can_match_none=True),
            end=pattern.AttrVar("end", can_match_none=True),
        )

    def check(
        self, op: Any, projected: ir.Value, start: Any = None, end: Any = None, **_: Any
    ) -> MatchResult:
        result = MatchResult()
        x = _projection_input(projected)
        if x is None:
            return result.fail("the input is not x @ W with a 2-D constant W and x's rank known")
        rank = len(x.shape) if x.shape is not None else 0
        stop = None if end is None else int(end.value)
        if stop is None or (stop if stop >= 0 else stop + rank) >= rank:
            if start is None and stop is None and _reads_before_last_axis(projected, rank):
                return result  # every reader Gathers axes before the last one
            return result.fail("the slice reaches the last axis, which W changes")
        return result

    def rewrite(
        self, op: Any, projected: ir.Value, start: Any = None, end: Any = None, **_: Any
    ) -> ir.Value:
        x = _projection_input(projected)
        assert x is not None
        attributes = {
            name: attr.value for name, attr in (("start", start), ("end", end)) if attr is not None
        }
        return op.Shape(x, **attributes)


def _reads_before_last_axis(projected: ir.Value, rank: int) -> bool:
    """True when every whole-Shape reader of `projected` is read only by Gathers of
    constant indices before the last axis (TorchScript's ``q.size(0)``, ``q.size(1)``)."""
    shapes = [c for c in projected.consumers() if c.op_type == "Shape"]
    if rank < 2 or not shapes:
        return False
    for shape_node in shapes:
        readers = list(shape_node.outputs[0].consumers())
        if not readers:
            return False
        for reader in readers:
            if reader.op_type != "Gather" or reader.inputs[0] is not shape_node.outputs[0]:
                return False
            index = reader.inputs[1]
            const = ir.convenience.get_const_tensor(index) if index is not None else None
            if const is None:
                return False
            axes = [int(i) + rank if int(i) < 0 else int(i) for i in const.numpy().reshape(-1)]
            if any(not 0 <= axis < rank - 1 for axis in axes):
                return False
    return True


def _projection_input(projected: ir.Value) -> ir.Value | None:
    node = projected.producer()
    if node is None or node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return None
    x, weight = node.inputs
    const = ir.convenience.get_const_tensor(weight) if weight is not None else None
    if x is None or const is None or len(const.shape) != 2 or x.shape is None:
        return None
    return x if len(x.shape) >= 2 else None


rules = pattern.RewriteRuleSet([ShapeBeforeBias.rule(), ShapeBeforeProjection.rule()])
