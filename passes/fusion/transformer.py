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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
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
from passes.fusion import bias_order, bias_shape, layer_norm, nan_guard, onnx_gelu
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
    """LayerNormalization(x + skip [+ bias]) → SkipLayerNormalization, x and skip of one shape.

    The library's rules read a projection bias as `Add(x @ W, b)`; TorchScript writes
    `Add(b, x @ W)` and commuting those rules fails inside onnxscript (its `OrValue`), so
    `bias_last` first puts every 1-D constant second (all-MiniLM: 12 bias Adds left).
    """

    anchors = ("LayerNormalization",)

    def rule_sets(self, model: ir.Model) -> Sequence[tuple[str, pattern.RewriteRuleSet]]:
        return [
            ("bias_last", bias_order.rules),
            ("skip_layer_norm", skip_normalization.skip_layer_normalization_ruleset),
        ]


class FuseAttentionPass(RuleSetPass):
    """Scaled dot-product attention → MultiHeadAttention (and, unless
    `keep_weighted_matmuls`, the packed-QKV Attention that swallows the projections).

    The SDPA rule leaves an intermediate op of onnxscript's fusion domain that the
    later rules turn into MultiHeadAttention; where one would survive, the pass
    first tries on a copy and leaves the model alone.
    """

    anchors = ("Softmax",)

    def __init__(
        self,
        *,
        keep_weighted_matmuls: bool = False,
        probe: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.keep_weighted_matmuls = keep_weighted_matmuls
        #: inputs the fused copy is checked on (the run's own samples; else a made-up probe)
        self.probe = probe

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
        """Fuse on a copy first; keep the result only if it computes what the model did.

        onnxscript's MHA rule takes the Reshape after attention for a (batch, sequence,
        hidden) output without checking it ("TODO: verify Reshapes"): on the dynamo
        export of GPT-2 with a cache the Gemm after it then got a rank-3 input and the
        artifact failed at its first run. A copy that onnxruntime will not run, or that
        computes something else on a small probe input, leaves the model alone.
        """
        trial = graph_tools.clone(model)
        counts = self._apply(trial)
        if not counts.get("sdpa"):
            return {name: 0 for name in counts}
        if any(n.domain == _FUSION_DOMAIN for n in trial.graph.all_nodes()):
            logger.info("not fusing attention: an intermediate SDPA op would remain")
            return {name: 0 for name in counts}
        refusal = fusion_refusal(model, trial, self.probe)
        if refusal:
            logger.info("not fusing attention: %s", refusal)
            return {name: 0 for name in counts}
        return self._apply(model)

    def _apply(self, model: ir.Model) -> dict[str, int]:
        counts: dict[str, int] = {}
        guards_before = _count(model, "IsNaN")
        for name, rules in self.rule_sets(model):
            counts[name] = rules.apply_to_model(model)
            if name == "sdpa" and counts[name]:
                # the MHA rules check the shapes around the new ops (as onnxscript's own
                # fuse_xformers does, with onnx's inference, which leaves known ones)
                ShapeInferencePass()(model)
        if _count(model, "IsNaN") < guards_before:  # the fused attention swallowed guards
            counts["nan_guards_kept"] = guard_attention_outputs(model)
        return counts


def guard_attention_outputs(model: ir.Model) -> int:
    """`Where(IsNaN(y), 0, y)` after every MultiHeadAttention output.

    The exported attention guarded its softmax (`Where(IsNaN(p), 0, p)`: a query whose
    every key is masked gets 0, not NaN); the fused MultiHeadAttention has no guard and
    gives NaN for such a row (a Llama batch whose first token is padding: NaN at every
    position after fusion, none before). The only NaN the fused op makes from finite
    inputs is that row, whose guarded original is exactly 0: putting the guard on the
    output restores the function. Returns how many outputs were guarded.
    """
    guarded = 0
    graph = model.graph
    for node in list(graph):
        if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft":
            continue
        y = node.outputs[0]
        if any(c.op_type == "IsNaN" for c in y.consumers()):
            continue  # already guarded
        zero = graph_tools.new_initializer(graph, f"{y.name}_nan_zero", np.zeros((), np.float32))
        is_nan = ir.node("IsNaN", [y])
        where = ir.node("Where", [is_nan.outputs[0], zero, y])
        where.outputs[0].name = f"{y.name}_guarded"
        where.outputs[0].shape, where.outputs[0].type = y.shape, y.type
        readers = [(c, i) for c, i in y.uses() if c is not is_nan and c is not where]
        graph.insert_after(node, [is_nan, where])
        for reader, index in readers:
            reader.replace_input_with(index, where.outputs[0])
        if y.is_graph_output():
            outputs = graph.outputs
            outputs[outputs.index(y)] = where.outputs[0]
        guarded += 1
    return guarded


def _count(model: ir.Model, op_type: str) -> int:
    return sum(1 for n in model.graph.all_nodes() if n.op_type == op_type)


def fusion_refusal(
    before: ir.Model, after: ir.Model, probe: Mapping[str, np.ndarray] | None = None
) -> str | None:
    """Why the fused copy must not replace the model, or None.

    Both run on `probe` (the run's own samples), else on a made-up input: batch 1,
    every free dimension 2, floats from a seeded normal, integers 1 (a valid row of
    any embedding table with two rows, a mask that attends everywhere). If the
    original itself does not run on it the check cannot judge and only asks that
    onnxruntime load the copy.
    """
    from compiler.ground.sessions import CPU, open_session, session_options

    def session(model: ir.Model) -> Any:
        proto = ir.to_proto(model).SerializeToString()
        return open_session(proto, session_options(level="none", threads=1), providers=CPU)

    try:
        fused = session(after)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types; each means "no"
        return f"onnxruntime does not load the fused graph ({' '.join(str(e).split())[:160]})"
    try:
        original = session(before)
        feeds = dict(probe) if probe is not None else _probe_feeds(original)
        want = original.run(None, feeds)
    except Exception:  # noqa: BLE001 - the probe does not fit the original: cannot judge
        return None
    try:
        got = fused.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        return f"the fused graph fails on a probe input ({' '.join(str(e).split())[:160]})"
    for w, g in zip(want, got, strict=True):
        if np.shape(w) != np.shape(g) or not np.allclose(
            g, w, rtol=1e-3, atol=1e-4, equal_nan=True
        ):
            return "the fused graph computes something else on a probe input"
    return None


def _probe_feeds(session: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [1 if axis == 0 else (d if isinstance(d, int) and d > 0 else 2)
                 for axis, d in enumerate(i.shape)]  # fmt: skip
        if "float" in i.type:
            dtype = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = rng.standard_normal(shape).astype(dtype)
        elif "bool" in i.type:
            feeds[i.name] = np.ones(shape, np.bool_)
        else:
            feeds[i.name] = np.ones(shape, np.int64 if "int64" in i.type else np.int32)
    return feeds


def transformer_passes(
    flavour: str,
    *,
    keep_weighted_matmuls: bool = False,
    probe: Mapping[str, np.ndarray] | None = None,
) -> list[ir.passes.PassBase]:
    """The transformer fusion passes for `flavour` ("onnxruntime" or "portable"), in order;
    `probe`: inputs of the run that the attention fusion checks its result on."""
    if flavour == "portable":
        return [FuseLayerNormPass(), FuseOnnxGeluPass()]
    if flavour != "onnxruntime":
        raise ValueError(f"unknown fusion flavour {flavour!r}; choose one of {FLAVOURS}")
    return [
        FuseLayerNormPass(),
        FuseGeluPass(),
        FuseBiasGeluPass(),
        FuseSkipLayerNormPass(),
        FuseAttentionPass(keep_weighted_matmuls=keep_weighted_matmuls, probe=probe),
    ]
