"""Remove inference-mode Dropout.

Rewrite::

    y = Dropout(x [, ratio [, training_mode]])  ->  y = x

Math: in inference mode Dropout is the identity (ONNX: "If training_mode is false,
the output is the input"; the ratio is ignored). Inference mode means: no
training_mode input (opset 12+), or a constant false one; before opset 12 Dropout
is inference-only unless an ``is_test=0`` attribute (opset < 7) says otherwise.

When y is a graph output, x takes over its name (as onnx-ir's
IdentityEliminationPass does).

Refuses (graph unchanged, logged at debug level):

- training_mode is not a constant (a graph input or a computed value), or is a
  constant true (the output is then random);
- the mask output is used or is a graph output (it would have to be synthesized);
- ``is_test=0`` (legacy training mode);
- y is a graph output and x is a graph input, an initializer or another graph
  output (x cannot be renamed; the node is kept).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)


class RemoveDropoutPass(ir.passes.InPlacePass):
    """Dropout in inference mode becomes its input."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for node in graph_tools.graph_nodes(model):
            if not graph_tools.is_op(node, "Dropout"):
                continue
            reason = self._refusal(node)
            if reason:
                logger.debug("not removing %s: %s", node.name, reason)
                continue
            x, y = node.inputs[0], node.outputs[0]
            assert x is not None and node.graph is not None
            graph_tools.bypass(y, x)
            graph = node.graph
            old_inputs = list(node.inputs[1:])
            graph.remove(node, safe=True)
            graph_tools.remove_dead(old_inputs)
            count += 1
        if count:
            logger.info("removed %d Dropout nodes", count)
        return ir.passes.PassResult(model, modified=bool(count))

    @staticmethod
    def _refusal(node: ir.Node) -> str | None:
        if not node.inputs or node.inputs[0] is None:
            return "malformed Dropout"
        if node.attributes.get_int("is_test", 1) == 0:
            return "is_test=0 (legacy training mode)"
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            training = graph_tools.constant(node.inputs[2])
            if training is None:
                return "training_mode is not a constant"
            if training.size != 1 or bool(training.reshape(())):
                return "training_mode is true"
        if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
            return "the mask output is used"
        if not graph_tools.can_bypass(node.outputs[0], node.inputs[0]):
            return "the output is a graph output that the input cannot take over"
        return None
