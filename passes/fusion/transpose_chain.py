"""Compose consecutive Transposes into one, or remove them when they cancel.

Rewrite::

    y = Transpose<perm=p2>(Transpose<perm=p1>(x))  ->  y = Transpose<perm=p>(x)
                                                  ->  y = x          when p is the identity
    y = Transpose<perm=identity>(x)               ->  y = x

Math: ``Transpose(z, q)`` has output axis j = input axis q[j], so output axis j of
the chain is axis p1[p2[j]] of x: ``p[j] = p1[p2[j]]``. A missing perm means
"reverse the axes" (its rank is the other perm's length); two missing perms cancel
whatever the rank. The second
Transpose is rewritten in place, so its output (and its name) is kept; a longer
chain collapses in one run because each node looks back at its rewritten producer.

Refuses (graph unchanged, logged at debug level):

- the intermediate value has other users or is a graph output (the first
  Transpose must stay; composing would then add work, not remove it);
- perms that are not permutations of one rank (an invalid model);
- removing an identity would turn a graph output into a graph input, an
  initializer or a duplicate graph output (the node is kept).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)


def _perm(perm: Sequence[int] | None, rank: int) -> list[int]:
    return list(perm) if perm is not None else list(range(rank - 1, -1, -1))


class FoldTransposeChainPass(ir.passes.InPlacePass):
    """Transpose → Transpose becomes one Transpose, or nothing when they cancel."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return graph_tools.rewrite_nodes(
            model,
            self._fold,
            log=logger,
            refused="not folding %s: %s",
            summary="folded %d Transposes",
        )

    def _fold(self, second: ir.Node) -> str | None:
        """Rewrite around `second`; return None when done, a reason (or "") when not."""
        if not graph_tools.is_op(second, "Transpose") or second.inputs[0] is None:
            return ""
        mid = second.inputs[0]
        assert mid is not None
        first = mid.producer()
        if not graph_tools.is_op(first, "Transpose") or first is None or first.inputs[0] is None:
            return self._drop_identity(second)
        if not graph_tools.single_use(mid):
            return "the intermediate value has other users or is a graph output"
        x = first.inputs[0]
        p1_attr = first.attributes.get_ints("perm", None)
        p2_attr = second.attributes.get_ints("perm", None)
        if p1_attr is None and p2_attr is None:
            perm = None  # reverse twice: identity whatever the rank
        else:
            rank = len(p1_attr) if p1_attr is not None else len(p2_attr or ())
            p1, p2 = _perm(p1_attr, rank), _perm(p2_attr, rank)
            if sorted(p1) != list(range(rank)) or sorted(p2) != list(range(rank)):
                return "perms are not permutations of one rank"
            perm = [p1[j] for j in p2]
        if perm is None or perm == list(range(len(perm))):
            out = second.outputs[0]
            if not graph_tools.can_bypass(out, x):
                return "the identity's output is a graph output that its input cannot take over"
            graph = second.graph
            assert graph is not None
            graph_tools.bypass(out, x)
            graph.remove([second, first], safe=True)
            return None
        second.replace_input_with(0, x)
        second.attributes["perm"] = ir.AttrInt64s("perm", perm)
        graph = first.graph
        assert graph is not None
        graph.remove(first, safe=True)
        return None

    def _drop_identity(self, node: ir.Node) -> str | None:
        perm = node.attributes.get_ints("perm", None)
        if perm is None or list(perm) != list(range(len(perm))):
            return ""
        x, out = node.inputs[0], node.outputs[0]
        assert x is not None
        if not graph_tools.can_bypass(out, x):
            return "the identity's output is a graph output that its input cannot take over"
        graph = node.graph
        assert graph is not None
        graph_tools.bypass(out, x)
        graph.remove(node, safe=True)
        return None
