"""A pass that applies onnxscript rewrite-rule sets and counts what each matched.

onnxscript's rewriter (`pattern`, `RewriteRuleSet`) matches on value shapes (a
SkipLayerNormalization needs input and skip to share [batch, sequence, hidden]; an
attention needs query, key and value to share batch and heads). The shapes the
cleanup passes leave are onnx's, which names every dimension a Reshape with -1 or a
Shape→Gather→Concat chain makes afresh (``unk__13`` vs ``unk__14``), so rules that
compare dimensions refuse. Before matching, `RuleSetPass` therefore re-infers every
intermediate shape with onnxruntime's symbolic shape inference (sympy arithmetic
on the named input dimensions: the heads of ``Reshape(q, [b, s, -1, 64])`` on a
[batch, sequence, 128] tensor come out as 2), falling back to onnx's inference with
data propagation.

What it refuses: a model whose graph has none of the rule set's anchor op types (a
CNN has no Softmax, Erf, LayerNormalization...) is not touched at all; when no rule
matches, the shapes found before are put back, so the pass leaves such a model
byte-identical and reports ``modified=False``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence

import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RuleSetResult(ir.passes.PassResult):
    """A PassResult that also says how often each named rule set matched (for the report)."""

    matches: dict[str, int] = dataclasses.field(default_factory=dict)


class RuleSetPass(ir.passes.InPlacePass):
    """Apply named onnxscript rule sets in order on freshly inferred shapes.

    Subclasses set `anchors` (op types one of which the graph must hold) and
    `min_opset`, and return their rule sets from `rule_sets`.
    """

    anchors: Collection[str] = ()
    min_opset: int = 1

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        raise NotImplementedError

    def call(self, model: ir.Model) -> RuleSetResult:
        if not self.applies(model):
            return RuleSetResult(model, modified=False, matches={})
        saved = _shapes(model)
        refresh_shapes(model)
        matches = self.apply(model)
        modified = any(matches.values())
        if not modified:
            _restore(saved)
        else:
            logger.info("%s: %s", type(self).__name__, matches)
        return RuleSetResult(model, modified=modified, matches=matches)

    def applies(self, model: ir.Model) -> bool:
        """The graph holds an anchor op and the model's opset is new enough."""
        if onnx_opset(model) < self.min_opset:
            return False
        return any(node.op_type in self.anchors for node in model.graph.all_nodes())

    def apply(self, model: ir.Model) -> dict[str, int]:
        """Each rule set's number of matches, applied in order."""
        return {name: rules.apply_to_model(model) for name, rules in self.rule_sets(model)}


def onnx_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def refresh_shapes(model: ir.Model) -> None:
    """Replace the shapes of intermediate values by freshly inferred ones (inputs, outputs
    and initializers keep theirs, and so do values the inference cannot type: the
    outputs of an op it does not know)."""
    inferred = _infer(model)
    if inferred is None:
        return
    keep = {*model.graph.inputs, *model.graph.outputs, *model.graph.initializers.values()}
    for node in model.graph.all_nodes():
        for value in node.outputs:
            if value in keep:
                continue
            found = inferred.get(value.name or "")
            if found is not None and found.shape is not None:
                value.shape = found.shape
                if found.type is not None:
                    value.type = found.type


def _infer(model: ir.Model) -> dict[str, ir.Value] | None:
    """Value name → value carrying the inferred type and shape, or None when both fail."""
    proto = ir.to_proto(model)
    del proto.graph.value_info[:]
    try:
        proto = _symbolic(proto)
    except Exception as e:  # noqa: BLE001 - any failure falls back to onnx's inference
        logger.debug("symbolic shape inference failed (%s); using onnx's", e)
        try:
            proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as e2:  # noqa: BLE001 - no shapes: the rules then refuse
            logger.debug("onnx shape inference failed too (%s)", e2)
            return None
    graph = ir.serde.deserialize_graph(proto.graph)
    return {v.name: v for node in graph.all_nodes() for v in node.outputs if v.name}


def _symbolic(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's symbolic shape inference, keeping what it found when incomplete.

    Its public `infer_shapes` raises on an incomplete inference (an op it does not
    know) after writing the model into the working directory; a compiler writes
    nothing there, and the partial shapes are what the rules need. Hence the same
    steps, through its (private) methods.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    ssi = SymbolicShapeInference(2**31 - 1, True, False, 0)
    ssi._preprocess(proto)  # noqa: SLF001 - see the docstring
    while ssi.run_:
        ssi._infer_impl()  # noqa: SLF001
    ssi._update_output_from_vi()  # noqa: SLF001
    return ssi.out_mp_


def _shapes(model: ir.Model) -> list[tuple[ir.Value, ir.Shape | None, ir.TypeProtocol | None]]:
    return [(v, v.shape, v.type) for node in model.graph.all_nodes() for v in node.outputs]


def _restore(saved: list[tuple[ir.Value, ir.Shape | None, ir.TypeProtocol | None]]) -> None:
    for value, shape, type_ in saved:
        value.shape, value.type = shape, type_
