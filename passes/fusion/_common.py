"""Helpers shared by the fusion and cleanup passes: the rewrite loop, constants, fresh
initializers, bypassing a node while keeping graph outputs valid, and dropping dead
constants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

# Float types whose folded values we compute in float64 and cast back.
FLOAT_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})


def graph_nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node of the main graph and its subgraphs, safe to rewrite while iterating.

    Nodes removed by an earlier rewrite of the same walk are skipped.
    """
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.graph is not None:
            yield node


def rewrite_nodes(
    model: ir.Model,
    rewrite: Callable[[ir.Node], str | None],
    *,
    log: logging.Logger,
    refused: str,
    summary: str,
) -> ir.passes.PassResult:
    """Offer every node to `rewrite` (see `graph_nodes`) and count the rewrites.

    `rewrite` returns None when it rewrote the graph around the node, "" when the node
    is not its pattern, and a reason when it refuses a match. Reasons are logged on the
    pass's own `log` at debug level as ``refused % (node.name, reason)``, and the count,
    when not zero, at info level as ``summary % count``. The result is modified iff some
    node was rewritten.
    """
    count = 0
    for node in graph_nodes(model):
        reason = rewrite(node)
        if reason:
            log.debug(refused, node.name, reason)
        elif reason is None:
            count += 1
    if count:
        log.info(summary, count)
    return ir.passes.PassResult(model, modified=bool(count))


def is_op(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def opset(model: ir.Model) -> int:
    """The model's default-domain (ONNX) opset version."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value as an array if it is a constant: an initializer that is not also a graph
    input (those can be overridden at run time), or the output of a Constant node."""
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    if tensor is None:
        return None
    try:
        return tensor.numpy()
    except Exception:  # noqa: BLE001 - e.g. external data that is not loaded
        return None


def single_use(value: ir.Value) -> bool:
    """The value feeds exactly one node input and is not a graph output."""
    return len(value.uses()) == 1 and not value.is_graph_output()


def only_used_by(value: ir.Value, node: ir.Node) -> bool:
    """Every use of `value` is an input of `node` and it is not a graph output."""
    return not value.is_graph_output() and all(use.node is node for use in value.uses())


def exclusive_constant(value: ir.Value, node: ir.Node, what: str) -> np.ndarray | str:
    """`value` as an array when it is a constant that only `node` reads (so rewriting it
    changes nothing elsewhere), else the reason, naming the input as `what`."""
    array = constant(value)
    if array is None:
        return f"{what} is not a constant"
    if not only_used_by(value, node):
        return f"{what} is shared with other nodes"
    return array


def value_names(graph: ir.Graph) -> set[str]:
    """Every value name in `graph`: inputs, initializers and node outputs."""
    names = {v.name for v in graph.inputs if v.name}
    names.update(name for name in graph.initializers if name)
    for node in graph:
        names.update(v.name for v in node.outputs if v.name)
    return names


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """Register `array` as an initializer named after `base`, unique in `graph`."""
    taken = value_names(graph)
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    tensor = ir.tensor(array, name=name)
    value = ir.Value(
        name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    graph.register_initializer(value)
    return value


def can_bypass(old: ir.Value, new: ir.Value) -> bool:
    """Whether uses of `old` can be redirected to `new` (see `bypass`)."""
    if not old.is_graph_output():
        return True
    # `new` must take over the graph output's name: refuse when it already has a name that
    # the graph's signature depends on, or when the output would appear twice. It must also
    # be defined in the same graph: a subgraph (If/Loop/Scan body) may not return a value of
    # an enclosing graph directly (onnxruntime refuses the model), and renaming that outer
    # value would rename it for the outer graph too.
    if new.is_graph_input() or new.is_initializer() or new.is_graph_output():
        return False
    return new.graph is not None and new.graph is old.graph


def bypass(old: ir.Value, new: ir.Value) -> None:
    """Redirect every use of `old` (graph outputs included) to `new`.

    When `old` is a graph output, `new` is renamed to `old`'s name so the model's
    signature is unchanged; call `can_bypass` first.
    """
    name = old.name
    if new.type is None:
        new.type = old.type
    if new.shape is None:
        new.shape = old.shape
    was_output = old.is_graph_output()
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = None
        new.name = name


def remove_dead(values: Iterable[ir.Value | None]) -> None:
    """Drop initializers and Constant nodes among `values` that nothing uses any more."""
    for value in values:
        if value is None or value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        graph = value.graph
        producer = value.producer()
        if value.is_initializer() and graph is not None and value.name is not None:
            graph.initializers.pop(value.name)
        elif producer is not None and is_op(producer, "Constant") and producer.graph is not None:
            producer.graph.remove(producer, safe=True)


def batchnorm_producer(bn: ir.Node, op_types: Collection[str]) -> ir.Node | str:
    """The node, of one of `op_types`, whose output BatchNormalization `bn` normalizes and
    nothing else reads; else the reason ("" when `bn` is not a BN fed by such a node)."""
    if not is_op(bn, "BatchNormalization") or bn.inputs[0] is None:
        return ""
    producer = bn.inputs[0].producer()
    if producer is None or not any(is_op(producer, op_type) for op_type in op_types):
        return ""
    if not single_use(producer.outputs[0]):
        return f"the {producer.op_type} output has other users or is a graph output"
    return producer


def batchnorm_affine(bn: ir.Node, opset_version: int) -> tuple[np.ndarray, np.ndarray] | str:
    """Inference BatchNormalization as a per-channel affine map ``y = s * x + t``.

    ``s = scale / sqrt(var + epsilon)`` and ``t = bias - mean * s``, in float64.
    Returns a reason string instead when the node is not a foldable inference BN.
    """
    if opset_version < 9:
        return "BatchNormalization before opset 9 (spatial/is_test semantics)"
    if bn.attributes.get_int("training_mode", 0) != 0:
        return "BatchNormalization in training mode"
    if any(out.name or out.uses() for out in bn.outputs[1:]):
        return "BatchNormalization with running statistics outputs (training mode)"
    if len(bn.inputs) != 5:
        return "BatchNormalization without its five inputs"
    params = [constant(v) for v in bn.inputs[1:]]
    if any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    scale, bias, mean, var = (np.asarray(p, dtype=np.float64) for p in params)  # type: ignore[arg-type]
    if any(p.ndim != 1 or p.shape != scale.shape for p in (scale, bias, mean, var)):
        return "BatchNormalization parameters are not 1-D tensors of one length"
    epsilon = bn.attributes.get_float("epsilon", 1e-5)
    s = scale / np.sqrt(var + epsilon)
    return s, bias - mean * s
