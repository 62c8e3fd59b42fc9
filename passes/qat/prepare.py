"""Put fake quantization into a torch module exactly where PTQ puts Q/DQ in its export.

The placement is not re-implemented here: it is *read* from the PTQ planner
(`passes.quantize.plan.plan_quantization`) run on an ONNX export of the module,
so QAT and PTQ cannot drift apart. The steps:

1. trace the module with torch.fx; wrap every Conv/ConvTranspose/Linear in a
   `QuantLayer`, folding a BatchNorm that is the only reader of a Conv's (or a
   Linear's) output into it;
2. export a copy in which every tensor edge of the fx graph (consumer node,
   argument position) passes through a ``Tap`` marker (a custom op carrying the
   edge's id); strip the markers, remembering which fx edge each ONNX (node,
   input index) came from; run the structure-preserving cleanup and fusion
   passes (onnxsim is left out: it renames every value, which would lose the map);
3. plan the spec's quantization on that graph, then translate each planned
   activation (the ONNX edges that read its DequantizeLinear) into fx edges,
   and put one `ActivationQuantizer` on them; tensors that share a range (a
   MaxPool/Flatten/Reshape output takes its input's) share the quantizer module. Weight sites switch on the
   `QuantLayer`'s weight quantization on the matching axis; int32 bias sites
   tie the layer to its input's quantizer.

The quantizers start at scale 1; `passes.qat.init` sets them (and the weights).

Refused (`QatUnsupported`, a ValueError saying what to do): modules torch.fx
cannot trace; a planned tensor or weight whose ONNX reader has no fx
counterpart (e.g. a functional matmul with a parameter weight: use nn.Linear).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.fx as fx
from torch import nn

from passes.qat.fake_quant import ActivationQuantizer, QuantLayer
from passes.qat.graph import (
    QUANTIZERS,
    FxEdge,
    QatUnsupported,
    cleanup,
    export_graph,
    floatified,
    get_arg,
    set_arg,
    strip_taps,
    tap,
    tensor_edges,
    trace,
    wrap_layers,
)
from passes.quantize.plan import QuantPlan, plan_quantization
from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)


@dataclass
class QatModel:
    """A module prepared for QAT: the fake-quant fx module and what it was planned from.

    `quantizers` maps each quantizer's ONNX value name (in `graph`, the planning
    export) to its module; `graph` and `plan` serve calibration and inspection.
    """

    module: fx.GraphModule
    spec: QuantSpec
    quantizers: dict[str, ActivationQuantizer]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    graph: ir.Model
    plan: QuantPlan
    example: torch.Tensor
    layers: dict[str, QuantLayer] = field(default_factory=dict)  # fx target → layer
    node_layers: dict[str, QuantLayer] = field(default_factory=dict)  # `graph` node name → layer
    node_owner: dict[str, str] = field(default_factory=dict)  # `graph` node name → fx node name
    structure: dict[str, Any] = field(default_factory=dict)  # what `apply_structure` changed

    def summary(self) -> dict[str, int]:
        return {
            "activation_quantizers": len(self.quantizers),
            "quantized_activation_tensors": len(self.plan.activations),
            "quantized_weights": sum(1 for q in self.layers.values() if q.quantize_weight),
            "int32_biases": sum(1 for q in self.layers.values() if q.quantize_bias),
        }


def prepare_qat(
    module: nn.Module,
    spec: QuantSpec,
    example: np.ndarray | torch.Tensor,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = 17,
    learn_scales: bool = True,
    fold_bn: bool = True,
) -> QatModel:
    """A fake-quant copy of `module` whose quantization is PTQ's plan under `spec`.

    `example` is one input batch (single-input modules). The quantizers start at
    scale 1 until `calibrate` or `init_from_ptq` sets them. With `fold_bn`, each
    BatchNorm is folded into its layer's weight and bias for good; without, the
    layer folds it on every call (for BN warm-up). `module` itself is not modified.
    """
    x = torch.as_tensor(np.asarray(example, dtype=np.float32))
    gm = trace(module)
    wrap_layers(gm)
    if fold_bn:
        for m in gm.modules():
            if isinstance(m, QuantLayer):
                m.absorb_bn()
    graph, edge_of = _planning_export(gm, x, input_names, output_names, opset)
    plan = plan_quantization(graph.graph, spec)
    place = _Placement(gm, edge_of)
    quantizers, assigned = _activation_quantizers(plan, spec, learn_scales, place)
    node_layers = _quantize_layers(plan, spec, quantizers, assigned, place)
    _insert_quantizers(gm, quantizers, assigned)
    logger.info(
        "QAT (%s spec): %d activation quantizers on %d edges, %d weights, %d int32 biases",
        spec.name,
        len(quantizers),
        len(assigned),
        len(plan.weights),
        len(plan.biases),
    )
    return QatModel(
        gm,
        spec,
        quantizers,
        tuple(input_names),
        tuple(output_names),
        opset,
        graph,
        plan,
        x[:1],
        place.layers,
        node_layers,
        place.owner,
    )


class _Placement:
    """Maps the planning export's ONNX nodes and edges back to the fx module."""

    def __init__(self, gm: fx.GraphModule, edge_of: dict[tuple[str, int], FxEdge]) -> None:
        self.gm = gm
        self.edge_of = edge_of
        self.owner = {node_name: fx_edge[0] for (node_name, _), fx_edge in edge_of.items()}
        self.nodes = {n.name: n for n in gm.graph.nodes}
        self.layers: dict[str, QuantLayer] = {}  # fx target → layer, for every layer used

    def fx_edge(self, node: ir.Node, idx: int, what: str) -> FxEdge:
        """The fx edge an ONNX (node, input index) came from."""
        e = self.edge_of.get((node.name or "", idx))
        if e is None:
            raise QatUnsupported(
                f"cannot place the quantizer of {what}: its reader {node.name!r} "
                f"({node.op_type}, input {idx}) has no torch counterpart"
            )
        return e

    def layer_of(self, node: ir.Node) -> QuantLayer:
        """The `QuantLayer` an ONNX weighted node was exported from."""
        fx_name = self.owner.get(node.name or "")
        fx_node = self.nodes.get(fx_name or "")
        if fx_node is None or fx_node.op != "call_module":
            raise QatUnsupported(
                f"the weight of ONNX node {node.name!r} ({node.op_type}) does not come from a "
                "torch Conv/ConvTranspose/Linear module; use those modules for quantized layers"
            )
        target = str(fx_node.target)
        layer = self.gm.get_submodule(target)
        if not isinstance(layer, QuantLayer):
            raise QatUnsupported(
                f"ONNX node {node.name!r} ({node.op_type}) comes from {type(layer).__name__}, "
                "not from a Conv/ConvTranspose/Linear module"
            )
        self.layers[target] = layer
        return layer


def _activation_quantizers(
    plan: QuantPlan, spec: QuantSpec, learn_scales: bool, place: _Placement
) -> tuple[dict[str, ActivationQuantizer], dict[FxEdge, str]]:
    """One quantizer per range root (value name → module), and the fx edges each reads."""
    quantizers: dict[str, ActivationQuantizer] = {}
    assigned: dict[FxEdge, str] = {}
    for name, site in plan.activations.items():
        root = plan.share.get(name, name)
        if root not in quantizers:
            quantizers[root] = ActivationQuantizer(
                spec.activation_dtype,
                symmetric=spec.activation_symmetric,
                qrange=spec.activation_qrange,
                bounds=plan.activations[root].bounds,
                learn_scale=learn_scales,
            )
        for node, idx in site.edges:
            e = place.fx_edge(node, idx, repr(name))
            if assigned.setdefault(e, root) != root:
                raise RuntimeError(f"fx edge {e} is planned for two quantizers")
    return quantizers, assigned


def _quantize_layers(
    plan: QuantPlan,
    spec: QuantSpec,
    quantizers: dict[str, ActivationQuantizer],
    assigned: dict[FxEdge, str],
    place: _Placement,
) -> dict[str, QuantLayer]:
    """Switch on weight quantization (on the matching axis) of each planned weight's layer
    and int32 biases tied to the input's quantizer; returns ONNX node name → layer."""
    node_layers: dict[str, QuantLayer] = {}
    for ws in plan.weights:
        layer = place.layer_of(ws.node)
        weight = ws.node.inputs[ws.index]
        onnx_shape = tuple(weight.shape or ()) if weight is not None else ()
        torch_shape = tuple(layer.layer.weight.shape)
        if onnx_shape == torch_shape:
            axis = ws.axis
        elif len(torch_shape) == 2 and onnx_shape == torch_shape[::-1]:
            axis = None if ws.axis is None else 1 - ws.axis
        else:
            raise QatUnsupported(
                f"ONNX weight of {ws.node.name!r} has shape {onnx_shape}, the torch layer's "
                f"is {torch_shape}; cannot match them"
            )
        layer.enable_weight_quant(axis, spec.weight_qmax)
        node_layers[ws.node.name or ""] = layer
    for bs in plan.biases:
        layer = place.layer_of(bs.node)
        idx = next(i for i, v in enumerate(bs.node.inputs) if v is bs.activation)
        root = assigned.get(place.fx_edge(bs.node, idx, f"the input of {bs.node.name!r}"))
        if root is None:
            continue
        layer.quantize_bias = True
        layer.set_input_quantizer(quantizers[root])
    return node_layers


def _planning_export(
    gm: fx.GraphModule,
    x: torch.Tensor,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
) -> tuple[ir.Model, dict[tuple[str, int], FxEdge]]:
    """Export with every fx edge tapped; returns the cleaned graph and (ONNX node, input) → fx edge."""
    g = floatified(gm)
    edges: list[FxEdge] = []
    for node in list(g.graph.nodes):
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        for path, src in tensor_edges(node):
            if src.op == "get_attr":
                continue
            tag = str(len(edges))
            edges.append((node.name, path))
            with g.graph.inserting_before(node):
                t = g.graph.call_function(tap, (src, tag))
            set_arg(node, path, t)
    g.recompile()
    model = export_graph(g, x, input_names, output_names, opset)
    edge_of: dict[tuple[str, int], FxEdge] = {}
    names = [n.name for n in model.graph]
    if len(set(names)) != len(names) or not all(names):
        raise RuntimeError("the export has unnamed or duplicate node names")
    for tapped in strip_taps(model):
        for reader, idx in tapped.readers:
            edge_of[(reader.name or "", idx)] = edges[int(tapped.tag)]
    return cleanup(model), edge_of


def _insert_quantizers(
    gm: fx.GraphModule, quantizers: dict[str, ActivationQuantizer], assigned: dict[FxEdge, str]
) -> None:
    index = {root: str(i) for i, root in enumerate(quantizers)}
    gm.add_module(QUANTIZERS, nn.ModuleDict({index[r]: q for r, q in quantizers.items()}))
    nodes = {n.name: n for n in gm.graph.nodes}
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    groups: dict[tuple[str, str], list[FxEdge]] = {}
    for (consumer, path), root in assigned.items():
        src = get_arg(nodes[consumer], path)
        groups.setdefault((root, src.name), []).append((consumer, path))
    for (root, _), edges in sorted(groups.items(), key=lambda kv: min(order[c] for c, _ in kv[1])):
        first = min((nodes[c] for c, _ in edges), key=lambda n: order[n.name])
        src = get_arg(nodes[edges[0][0]], edges[0][1])
        with gm.graph.inserting_before(first):
            q = gm.graph.call_module(f"{QUANTIZERS}.{index[root]}", (src,))
        for consumer, path in edges:
            set_arg(nodes[consumer], path, q)
    gm.graph.lint()
    gm.recompile()
