"""Collapse consecutive Reshapes and drop Reshapes that do not change the shape.

Rewrites::

    y = Reshape(Reshape(x, s1), s2)  ->  y = Reshape(x, s2)
    y = Reshape(x, s)                ->  y = x       when s is x's own shape

Math: a Reshape keeps the elements in row-major order and only relabels the shape,
so a chain is decided by its last target shape alone: s2's ``-1`` is inferred from
the element count, which the first Reshape does not change. The exception is a
``0`` in s2 with ``allowzero=0``, which copies a dim *of the intermediate* value;
such chains are refused (the dim would have to be read from s1, which may itself
copy from x). With ``allowzero=1`` a 0 is a literal zero dim and the chain folds.
s1 need not be constant. The second Reshape is rewritten in place (its output,
name and allowzero are kept). A chain that was invalid at run time (the first
Reshape failing) becomes valid; that is the one behaviour change.

A Reshape is a no-op when its constant target has x's rank and, dim by dim, is
either the same static size as x's dim, a ``0`` copying it (allowzero=0), or the
single ``-1`` (which then resolves to x's dim, because all others match). This
holds for dynamic dims too: ``Reshape(x[N, 4], [-1, 4])`` is dropped.

Refuses (graph unchanged, logged at debug level):

- a non-constant s2 / s, or an s2 with a 0 copying an intermediate dim;
- the intermediate value has other users or is a graph output;
- x's shape is unknown (for the no-op rule);
- dropping a no-op whose output is a graph output when x is a graph input, an
  initializer or another graph output (the Reshape is kept).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)


def _target(node: ir.Node) -> list[int] | None:
    if len(node.inputs) < 2:
        return None
    shape = graph_tools.constant(node.inputs[1])
    if shape is None or shape.ndim != 1:
        return None
    return [int(d) for d in shape]


def _is_noop(node: ir.Node, target: list[int]) -> bool:
    x = node.inputs[0]
    assert x is not None
    if x.shape is None or len(x.shape) != len(target):
        return False
    allowzero = node.attributes.get_int("allowzero", 0)
    inferred = 0
    for dim, want in zip(x.shape, target, strict=True):
        if want == -1:
            inferred += 1
        elif want == 0 and not allowzero:
            continue
        elif not isinstance(dim, int) or dim != want:
            return False
    return inferred <= 1


class FoldReshapeChainPass(ir.passes.InPlacePass):
    """Reshape → Reshape becomes one Reshape; a shape-preserving Reshape is dropped."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return graph_tools.rewrite_nodes(
            model,
            self._fold,
            log=logger,
            refused="not folding %s: %s",
            summary="folded %d Reshapes",
        )

    def _fold(self, second: ir.Node) -> str | None:
        """Rewrite around `second`; return None when done, a reason (or "") when not."""
        if not graph_tools.is_op(second, "Reshape") or second.inputs[0] is None:
            return ""
        target = _target(second)
        if target is None:
            return "the target shape is not a constant 1-D tensor"
        mid = second.inputs[0]
        assert mid is not None
        first = mid.producer()
        if (
            graph_tools.is_op(first, "Reshape")
            and first is not None
            and first.inputs[0] is not None
        ):
            if not graph_tools.single_use(mid):
                return "the intermediate value has other users or is a graph output"
            if 0 in target and not second.attributes.get_int("allowzero", 0):
                return "the target copies a dim (0) of the intermediate value"
            old_shape = first.inputs[1] if len(first.inputs) > 1 else None
            second.replace_input_with(0, first.inputs[0])
            graph = first.graph
            assert graph is not None
            graph.remove(first, safe=True)
            graph_tools.remove_dead([old_shape])
            # The collapsed Reshape may itself be a no-op now.
            self._drop_noop(second, target)
            return None
        return self._drop_noop(second, target)

    def _drop_noop(self, node: ir.Node, target: list[int]) -> str | None:
        x, out = node.inputs[0], node.outputs[0]
        assert x is not None
        if not _is_noop(node, target):
            return ""
        if not graph_tools.can_bypass(out, x):
            return "the no-op's output is a graph output that its input cannot take over"
        graph = node.graph
        assert graph is not None
        shape = node.inputs[1]
        graph_tools.bypass(out, x)
        graph.remove(node, safe=True)
        graph_tools.remove_dead([shape])
        return None
