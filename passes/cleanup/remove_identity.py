"""Remove Identity nodes.

Rewrite::

    y = Identity(x)  ->  y = x

Math: Identity's output is its input (tensors, sequences and optionals alike).
When y is a graph output, x takes over its name. The walk covers the main graph,
subgraphs (If/Loop/Scan bodies) and model-local functions.

Why not onnx-ir's ``IdentityEliminationPass``: in onnx-ir 1.1 it also removes an
Identity whose output y is a graph output when x is

- another output of the same graph: the graph then lists one value twice and
  renames it, so one output name disappears. In a Scan body
  ``(state_out, scan_out)`` with ``scan_out = Identity(state_out)`` the two outputs
  collapse and Scan computes something else (ONNX's ``test_scan9_sum``: off by 12);
- a value of an enclosing graph (a subgraph returning an outer-scope value): the
  outer value is renamed for the outer graph too, and onnxruntime refuses a
  subgraph output that is an outer-scope value (``test_affine_grid_3d_expanded``).

Refuses (node kept, logged at debug level), via `passes.graph_tools.can_bypass`:
y is a graph output and x is a graph input, an initializer, another graph output,
or defined outside y's graph.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)


def _nodes(model: ir.Model) -> Iterator[ir.Node]:
    yield from graph_tools.graph_nodes(model)
    for function in model.functions.values():
        for node in list(ir.traversal.RecursiveGraphIterator(function)):
            if node.graph is not None:
                yield node


class RemoveIdentityPass(ir.passes.InPlacePass):
    """Identity becomes its input, unless that would break a graph's outputs."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for node in _nodes(model):
            if not graph_tools.is_op(node, "Identity"):
                continue
            if len(node.inputs) != 1 or node.inputs[0] is None or len(node.outputs) != 1:
                continue
            x, y = node.inputs[0], node.outputs[0]
            if not graph_tools.can_bypass(y, x):
                logger.debug(
                    "not removing %s: its output is a graph output its input cannot take over",
                    node.name,
                )
                continue
            graph = node.graph
            assert graph is not None
            graph_tools.bypass(y, x)
            graph.remove(node, safe=True)
            count += 1
        if count:
            logger.info("removed %d Identity nodes", count)
        return ir.passes.PassResult(model, modified=bool(count))
