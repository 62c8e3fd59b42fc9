"""Dead-code elimination with an exact ``modified`` flag.

Rewrite: onnx-ir's `RemoveUnusedNodesPass`, unchanged — nodes whose outputs nothing
uses and that are not graph outputs are removed, then unused initializers; unused
trailing optional outputs and trailing empty inputs are trimmed and a default
``training_mode=0`` on BatchNormalization is dropped. The function is unchanged.

Why a subclass: in onnx-ir 1.1 the base pass reports ``modified`` from the number
of removed nodes and initializers only, so a model where it merely trims outputs or
drops ``training_mode=0`` (every BatchNormalization torch exports at opset >= 14)
comes back changed with ``modified=False``. This subclass also compares each node's
input arity, named outputs and attribute names before and after, so ``modified`` is True
exactly when the model changed. Nothing is refused; it is the base pass's rewrite.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass


def _signature(node: ir.Node) -> tuple:
    return (
        id(node),
        len(node.inputs),
        tuple(bool(out.name) for out in node.outputs),
        tuple(sorted(node.attributes)),
    )


def _node_signature(model: ir.Model) -> list[tuple]:
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    for function in model.functions.values():
        nodes.extend(function)
    return [_signature(node) for node in nodes]


class RemoveUnusedNodesExactPass(RemoveUnusedNodesPass):
    """onnx-ir's RemoveUnusedNodesPass, reporting the changes it makes in place too."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _node_signature(model)
        result = super().call(model)
        modified = result.modified or _node_signature(result.model) != before
        return ir.passes.PassResult(result.model, modified=modified)
