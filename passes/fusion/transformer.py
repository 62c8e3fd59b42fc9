"""Transformer fusions: onnxscript's rule sets, one recorded pass per concern.

Two flavours, chosen by the target (`Target.fusions`):

- ``"onnxruntime"`` (cpu, cuda): onnxruntime's contrib ops: Gelu/FastGelu,
  BiasGelu, SkipLayerNormalization, MultiHeadAttention (through onnxscript's SDPA
  rule), and the packed-QKV `Attention`;
- ``"portable"`` (tensorrt): standard ONNX only: LayerNormalization (opset 17+),
  Gelu (opset 20+); no com.microsoft op is ever emitted.

Both start with the standard LayerNormalization fusion. `keep_weighted_matmuls`
leaves out every rule that swallows a MatMul by a constant weight (the packed
`Attention` takes the Q/K/V projection weights as one input): the INT8 quantizer,
which runs after these passes, quantizes only MatMul/Gemm/Conv it can see.
SkipLayerNormalization, LayerNormalization, Gelu, BiasGelu and MultiHeadAttention
after the projections keep every weighted MatMul in the graph.

The rules are the library's (`onnxscript.rewriter.ort_fusions`,
`onnxscript.rewriter.rules.fusion`); edgec adds only what it lacks, in the same
form: `nan_guard` (torch's softmax NaN guard with a 1-D zero), `onnx_gelu` (the
standard-op replacement), shape checks on the LayerNorm rules (`layer_norm`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions import (
    attention,
    bias_gelu,
    erfgelu,
    gelu,
    mha,
    mha_bias,
    mha_scale,
    sdpa,
    sdpa_via_mha,
    skip_normalization,
)

from passes import graph_tools
from passes.fusion import bias_shape, layer_norm, nan_guard, onnx_gelu
from passes.fusion.rule_set import RuleSetPass

logger = logging.getLogger(__name__)

FLAVOURS = ("onnxruntime", "portable")
#: the domain of onnxscript's intermediate fusion ops (SDPA...); none may reach an artifact
_FUSION_DOMAIN = "ai.onnxruntime._fusion"


_MHA_BIAS_EITHER_ORDER = pattern.RewriteRuleSet(mha_bias.mha_bias_rules.rules, commute=True)


class FuseLayerNormPass(RuleSetPass):
    """Decomposed LayerNorm (and a trailing bias Add) → LayerNormalization."""

    anchors = ("ReduceMean", "LayerNormalization")
    min_opset = layer_norm.LAYER_NORM_OPSET

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [("layer_norm", layer_norm.rules)]


class FuseOnnxGeluPass(RuleSetPass):
    """Erf/tanh GELU → the standard Gelu (portable flavour)."""

    anchors = ("Erf", "Tanh")
    min_opset = onnx_gelu.GELU_OPSET

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [("gelu", onnx_gelu.rules)]


class FuseGeluPass(RuleSetPass):
    """Erf GELU → com.microsoft Gelu, tanh GELU → FastGelu."""

    anchors = ("Erf", "Tanh")

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [("erf_gelu", erfgelu.rules), ("gelu", gelu.gelu_rules)]


class FuseBiasGeluPass(RuleSetPass):
    """Gelu(x + bias) → BiasGelu(x, bias) for a 1-D bias."""

    anchors = ("Gelu",)

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [("bias_gelu", bias_gelu.bias_gelu_rules)]


class FuseSkipLayerNormPass(RuleSetPass):
    """LayerNormalization(x + skip [+ bias]) → SkipLayerNormalization, x and skip of one shape."""

    anchors = ("LayerNormalization",)

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [("skip_layer_norm", skip_normalization.skip_layer_normalization_ruleset)]


class FuseAttentionPass(RuleSetPass):
    """Scaled dot-product attention → MultiHeadAttention (and, unless
    `keep_weighted_matmuls`, the packed-QKV Attention that swallows the projections).

    The SDPA rule leaves an intermediate op of onnxscript's fusion domain that the
    later rules turn into MultiHeadAttention; where one would survive, the pass
    first tries on a copy and leaves the model alone.
    """

    anchors = ("Softmax",)

    def __init__(self, *, keep_weighted_matmuls: bool = False) -> None:
        super().__init__()
        self.keep_weighted_matmuls = keep_weighted_matmuls

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        steps = [
            ("bias_shape", bias_shape.rules),
            ("nan_guard", nan_guard.rules),
            ("sdpa", sdpa.sdpa_rules),
            ("mha", mha.mha_rules_no_past),
            ("mha_scale", mha_scale._mha_scale_rules),  # noqa: SLF001 - the library's only handle
            # the MHA rewrite reads the query's shape again: move that read off the bias too
            ("bias_shape_after_mha", bias_shape.rules),
            # TorchScript writes the projection bias first (Add(b, x @ W)): both orders
            ("mha_bias", _MHA_BIAS_EITHER_ORDER),
        ]
        if not self.keep_weighted_matmuls:
            steps.append(("attention", attention.attention_rules))
        steps.append(("sdpa_via_mha", sdpa_via_mha._rules))  # noqa: SLF001 - the library's only handle
        return steps

    def apply(self, model: ir.Model) -> dict[str, int]:
        trial = graph_tools.clone(model)
        counts = self._apply(trial)
        if not counts.get("sdpa"):
            return {name: 0 for name in counts}
        if any(n.domain == _FUSION_DOMAIN for n in trial.graph.all_nodes()):
            logger.info("not fusing attention: an intermediate SDPA op would remain")
            return {name: 0 for name in counts}
        return self._apply(model)

    def _apply(self, model: ir.Model) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, rules in self.rule_sets(model):
            counts[name] = rules.apply_to_model(model)
            if name == "sdpa" and counts[name]:
                # the MHA rules check the shapes around the new ops (as onnxscript's own
                # fuse_xformers does, with onnx's inference, which leaves known ones)
                ShapeInferencePass()(model)
        return counts


def transformer_passes(
    flavour: str, *, keep_weighted_matmuls: bool = False
) -> list[ir.passes.PassBase]:
    """The transformer fusion passes for `flavour` ("onnxruntime" or "portable"), in order."""
    if flavour == "portable":
        return [FuseLayerNormPass(), FuseOnnxGeluPass()]
    if flavour != "onnxruntime":
        raise ValueError(f"unknown fusion flavour {flavour!r}; choose one of {FLAVOURS}")
    return [
        FuseLayerNormPass(),
        FuseGeluPass(),
        FuseBiasGeluPass(),
        FuseSkipLayerNormPass(),
        FuseAttentionPass(keep_weighted_matmuls=keep_weighted_matmuls),
    ]
