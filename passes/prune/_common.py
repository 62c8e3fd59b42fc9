"""Helpers shared by the pruning passes: weight slots, constants, static shapes.

A *weight slot* is the constant operand of a Conv, Gemm or MatMul whose entries
are multiplied by activations: Conv input 1 ([M, C/g, *k]), Gemm input 1 (B,
[K, N] or [N, K] with transB), MatMul input 1 ([K, N]).  The reduction
(input-channel) axis and output-channel axis of each are given by
`weight_axes`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)

LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def constant_initializer(value: ir.Value | None) -> np.ndarray | None:
    """The value's array when it is a constant initializer (not a graph input), else None."""
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    if value.const_value is None:
        return None
    return value.const_value.numpy()


def set_initializer(value: ir.Value, array: np.ndarray) -> None:
    """Replace an initializer's data (and its recorded shape) with `array`."""
    array = np.ascontiguousarray(array)
    value.const_value = ir.Tensor(array, name=value.name)
    value.shape = ir.Shape(array.shape)


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def attr_ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return None if attr is None else [int(i) for i in attr.as_ints()]


@dataclasses.dataclass(frozen=True)
class WeightSlot:
    """A constant weight operand: the node, the value, and its axes."""

    node: ir.Node
    value: ir.Value
    out_axis: int
    reduce_axis: int
    group: int = 1

    @property
    def is_depthwise(self) -> bool:
        shape = self.value.shape
        return self.group > 1 and shape is not None and shape[1] == 1


def weight_slot(node: ir.Node) -> WeightSlot | None:
    """The node's constant weight operand, or None (not a Conv/Gemm/MatMul, or not constant)."""
    if node.op_type not in LINEAR_OPS or not is_default_domain(node) or len(node.inputs) < 2:
        return None
    w = node.inputs[1]
    arr = constant_initializer(w)
    if w is None or arr is None:
        return None
    if node.op_type == "Conv":
        if arr.ndim < 3:
            return None
        return WeightSlot(node, w, 0, 1, attr_int(node, "group", 1))
    if arr.ndim != 2:
        return None
    if node.op_type == "Gemm":
        if attr_int(node, "transA", 0) != 0:
            return None
        return (
            WeightSlot(node, w, 0, 1) if attr_int(node, "transB", 0) else WeightSlot(node, w, 1, 0)
        )
    return WeightSlot(node, w, 1, 0)  # MatMul: x @ W, W is [K, N]


def static_shapes(model: ir.Model) -> dict[str, tuple[int | None, ...]]:
    """Shapes of all named values by ONNX shape inference on a serialized copy.

    The model itself is left untouched (so a pass that changes nothing stays
    unmodified); names are used for lookup only, never for wiring.
    """
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:  # inference is best effort: a missing shape only refuses a group
        logger.debug("shape inference failed (%s); using recorded shapes only", e)
    shapes: dict[str, tuple[int | None, ...]] = {}
    graph = proto.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim
            )
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def value_shape(
    value: ir.Value, inferred: dict[str, tuple[int | None, ...]]
) -> tuple[int | None, ...] | None:
    """Inferred shape, or the recorded one; None when the rank is unknown."""
    if value.name and value.name in inferred:
        return inferred[value.name]
    if value.shape is not None:
        return tuple(d if isinstance(d, int) else None for d in value.shape.dims)
    return None
