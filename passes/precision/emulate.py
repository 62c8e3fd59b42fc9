"""A converted model's float16 storage made explicit, to run on onnxruntime's CPU.

onnxruntime's CPU provider runs an op that has no CPU float16 kernel in float32
between Casts, and merges consecutive such ops into one float32 island: a tensor
between two of them is never stored in float16 (measured: ``Sqrt(x * x)`` of a
float16 x = 300 gives 300, where a GPU running both ops in float16 overflows to
inf). Running a converted model on the CPU therefore understates what float16
storage costs on a GPU.

`emulate_float16_storage(model)` returns a float32 copy of a converted model in
which every tensor that is float16 in the model is rounded to float16 and back
(a Cast pair) right where it is made: float32 arithmetic, float16 storage — how
a GPU whose kernels accumulate in float32 (cuBLAS, cuDNN, TensorRT by default)
computes it. Float16 constants become float32 (exactly). Graph inputs and outputs
of float16 become float32 (inputs are rounded on entry). Element types come from
`ops.element_types` (shape inference where the model does not say). Only the main
graph is rewritten (the FP16 pass leaves subgraphs float32).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.precision.ops import FLOAT, FLOAT16, element_types

__all__ = ["emulate_float16_storage"]


def emulate_float16_storage(model: ir.Model) -> ir.Model:
    """See the module docstring; `model` itself is not modified."""
    copy = graph_tools.clone(model)
    graph = copy.graph
    types = element_types(copy)
    taken = graph_tools.value_names(graph)
    for value in list(graph.initializers.values()):
        if value.dtype == FLOAT16 and value.const_value is not None:
            array = value.const_value.numpy().astype(np.float32)
            value.const_value = ir.tensor(array, name=value.name)
            value.type = ir.TensorType(FLOAT)
    for node in list(graph):
        if graph_tools.is_std(node, "Constant", "ConstantOfShape"):
            _widen_tensor_attribute(node)
            continue
        for out in node.outputs:
            if types.get(out) == FLOAT16:
                _round_trip(graph, out, node, taken)
    for value in list(graph.inputs):
        if value.dtype == FLOAT16:
            value.type = ir.TensorType(FLOAT)
            _round_trip(graph, value, None, taken)
    return copy


def _widen_tensor_attribute(node: ir.Node) -> None:
    attr = node.attributes.get("value")
    if attr is None or attr.type != ir.AttributeType.TENSOR:
        return
    tensor = attr.as_tensor()
    if tensor.dtype == FLOAT16:
        node.attributes["value"] = ir.AttrTensor(
            "value", ir.tensor(tensor.numpy().astype(np.float32))
        )
        node.outputs[0].type = ir.TensorType(FLOAT)


def _round_trip(
    graph: ir.Graph, value: ir.Value, producer: ir.Node | None, taken: set[str]
) -> None:
    """`value` (made float32 here) is read through Cast(float16) -> Cast(float32) by
    everything that read it; a Cast to float16 keeps its own output and gains the
    second Cast only."""
    is_cast16 = producer is not None and graph_tools.is_std(producer, "Cast")
    uses = list(value.uses())
    was_output = [i for i, v in enumerate(graph.outputs) if v is value]
    nodes = []
    source = value
    if not is_cast16:
        value.type = ir.TensorType(FLOAT)
        down = ir.Node("", "Cast", [value], [ir.AttrInt64("to", FLOAT16.value)])
        down.outputs[0].name = graph_tools.unique_name(graph, f"{value.name}_as_fp16", taken)
        down.outputs[0].type = ir.TensorType(FLOAT16)
        down.outputs[0].shape = value.shape
        nodes.append(down)
        source = down.outputs[0]
    up = ir.Node("", "Cast", [source], [ir.AttrInt64("to", FLOAT.value)])
    up.outputs[0].name = graph_tools.unique_name(graph, f"{value.name}_fp16_storage", taken)
    up.outputs[0].type = ir.TensorType(FLOAT)
    up.outputs[0].shape = value.shape
    nodes.append(up)
    if producer is not None:
        graph.insert_after(producer, nodes)
    elif len(graph):
        graph.insert_before(graph.node(0), nodes)
    else:
        graph.extend(nodes)
    rounded = up.outputs[0]
    for use in uses:
        use.node.replace_input_with(use.idx, rounded)
    for i in was_output:  # the output keeps its name and is the rounded value
        name = value.name
        value.name = graph_tools.unique_name(graph, f"{name}_unrounded", taken)
        rounded.name = name
        graph.outputs[i] = rounded
