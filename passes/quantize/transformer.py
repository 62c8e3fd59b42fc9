"""Which quantization recipe a graph gets: the target's CNN spec or its transformer spec.

The CNN specs (`CPU_SPEC`, `TENSORRT_SPEC`) were tuned on convolutional networks:
they quantize residual Adds, the outputs of MatMuls and every MatMul, also one of
two computed tensors. On a transformer that puts Q/DQ on LayerNorm's input, on the
attention scores (which hold -inf or the float minimum where the mask is 0) and on
both sides of the attention MatMuls: a random-init ViT-tiny lost 10 dB of output
SQNR to it (cosine 0.95). A graph counts as a transformer when it holds a layer
normalization (ONNX LayerNormalization or onnxruntime's LayerNormalization,
SkipLayerNormalization, SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization),
an attention contrib op, or a MatMul of two computed tensors; it then gets the
target's transformer spec (`spec.CPU_TRANSFORMER_SPEC`, `TENSORRT_TRANSFORMER_SPEC`):
only weighted MatMul/Gemm quantize their input, everything else stays float.

A CNN matches none of these, so its spec and artifact are unchanged.
"""

from __future__ import annotations

import onnx_ir as ir

from passes import graph_tools
from passes.quantize.spec import (
    CPU_SPEC,
    CPU_TRANSFORMER_SPEC,
    TENSORRT_SPEC,
    TENSORRT_TRANSFORMER_SPEC,
    QuantSpec,
)

__all__ = ["is_transformer", "spec_for"]

_NORMS = frozenset(
    {
        "LayerNormalization",
        "SkipLayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "EmbedLayerNormalization",
    }
)
_ATTENTION = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})
_TRANSFORMER_OF = {
    CPU_SPEC.name: CPU_TRANSFORMER_SPEC,
    TENSORRT_SPEC.name: TENSORRT_TRANSFORMER_SPEC,
}


def is_transformer(graph: ir.Graph) -> bool:
    """A layer normalization, an attention op, or a MatMul of two computed tensors."""
    for node in graph:
        if node.op_type in _NORMS or node.op_type in _ATTENTION:
            return True
        if graph_tools.is_std(node, "MatMul") and len(node.inputs) == 2:
            if all(
                v is not None and graph_tools.constant(v) is None and not v.is_graph_input()
                for v in node.inputs
            ):
                return True
    return False


def spec_for(graph: ir.Graph, spec: QuantSpec) -> QuantSpec:
    """The target's transformer spec for a transformer graph, else `spec` itself (a spec
    without a transformer variant is kept, keeping its own stem choice)."""
    if spec.name not in _TRANSFORMER_OF or not is_transformer(graph):
        return spec
    variant = _TRANSFORMER_OF[spec.name]
    return variant.replace(float_stem=spec.float_stem, reduce_range=spec.reduce_range)
