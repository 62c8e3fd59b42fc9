"""Graph helpers for every pass: one module, so each helper is written once.

- reading a graph: constants (`constant`, `constant_initializer`), attributes
  (`attr_*`), op tests (`is_op`, `is_std`, `is_default_domain`), opsets,
  value names, static shapes;
- editing it: the rewrite loop of the fusion and cleanup passes
  (`rewrite_nodes`), fresh initializers, bypassing a node, dropping dead
  constants, BatchNorm folding arithmetic;
- weight slots of linear layers (pruning, quantization);
- running it: a serialized copy with extra outputs (`model_bytes`), a CPU
  onnxruntime session for analysis (`ort_session`), deep copies;
- grouping what belongs together (`components`: residual streams, chained Adds).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, TypeVar, overload

import numpy as np
import onnx
import onnx_ir as ir

from compiler.ground.sessions import open_session, session_options

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


def new_initializer(
    graph: ir.Graph, base: str, array: np.ndarray, *, taken: set[str] | None = None
) -> ir.Value:
    """Register `array` as an initializer named after `base`, unique in `graph`; a caller
    adding many passes its own `taken` set (`unique_name` keeps it current) instead of
    rescanning the graph for each one."""
    name = unique_name(graph, base, value_names(graph) if taken is None else taken)
    # ir.Tensor, not ir.tensor: the latter's runtime Protocol checks cost 80 us a call,
    # and building a Q/DQ model registers thousands of these
    tensor = ir.Tensor(np.asarray(array), name=name)
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
    scale, bias, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    if any(p.ndim != 1 or p.shape != scale.shape for p in (scale, bias, mean, var)):
        return "BatchNormalization parameters are not 1-D tensors of one length"
    epsilon = bn.attributes.get_float("epsilon", 1e-5)
    s = scale / np.sqrt(var + epsilon)
    return s, bias - mean * s


# --- weight slots and static shapes (pruning) ---

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


# --- quantization and analysis runs ---

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE})


def is_std(node: ir.Node, *op_types: str) -> bool:
    """`node` is one of `op_types` in the default ONNX domain."""
    return node.domain in ("", "ai.onnx") and node.op_type in op_types


def is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in FLOAT_TYPES


def attr_int(node: ir.Node, name: str, default: int) -> int:
    a = node.attributes.get(name)
    return default if a is None else int(a.as_int())


def attr_float(node: ir.Node, name: str, default: float) -> float:
    a = node.attributes.get(name)
    return default if a is None else float(a.as_float())


@overload
def attr_ints(node: ir.Node, name: str) -> list[int] | None: ...
@overload
def attr_ints(node: ir.Node, name: str, default: list[int]) -> list[int]: ...
def attr_ints(node: ir.Node, name: str, default: list[int] | None = None) -> list[int] | None:
    """The attribute's ints; `default` (a copy) when the node has no such attribute."""
    a = node.attributes.get(name)
    if a is None:
        return None if default is None else list(default)
    return [int(i) for i in a.as_ints()]


def attr_str(node: ir.Node, name: str, default: str) -> str:
    a = node.attributes.get(name)
    return default if a is None else str(a.as_string())


def activation_bounds(node: ir.Node) -> tuple[float, float] | None:
    """The output interval a Relu or Clip guarantees, or None when it is not constant."""
    if is_std(node, "Relu"):
        return (0.0, float("inf"))
    if not is_std(node, "Clip"):
        return None
    lo, hi = -float("inf"), float("inf")
    if "min" in node.attributes:  # opset < 11
        lo = attr_float(node, "min", lo)
        hi = attr_float(node, "max", hi)
        return (lo, hi)
    for idx, default in ((1, lo), (2, hi)):
        if len(node.inputs) > idx and node.inputs[idx] is not None:
            arr = constant(node.inputs[idx])
            if arr is None or arr.size != 1:
                return None
            if idx == 1:
                lo = float(arr.reshape(()))
            else:
                hi = float(arr.reshape(()))
        elif idx == 1:
            lo = default
        else:
            hi = default
    return (lo, hi)


def unique_name(graph: ir.Graph, base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`... not yet in `taken` (which is updated)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def node_copy(
    graph: ir.Graph, node: ir.Node, inputs: list[ir.Value | None], base: str, taken: set[str]
) -> ir.Node:
    """A new node of `node`'s op and attributes reading `inputs`, with one output named
    after `base` (unique in `taken`, which is updated); not yet inserted in `graph`."""
    out = ir.Value(name=unique_name(graph, base, taken))
    return ir.Node(
        node.domain,
        node.op_type,
        inputs,
        attributes=list(node.attributes.values()),
        outputs=[out],
        name=out.name,
    )


def ort_session(model_bytes: bytes, *, threads: int = 0, optimize: bool = False) -> Any:
    """A CPU onnxruntime session: ENABLE_ALL with `optimize` (the deployed integer
    kernels), else no graph optimization at all (DISABLE_ALL). The latter is the exact
    Q/DQ arithmetic: even onnxruntime's BASIC level rewrites Q/DQ graphs (e.g. its
    weight/bias quantization quantizes a float weight that follows a DQ per tensor).
    The arena stays on: analysis sessions fetch many intermediate tensors, and without
    it every run maps and faults in their memory afresh (MobileNetV2's bias correction
    ran 1.1-1.3x slower, peak memory the same within 0.2 GB); idle workers never spin,
    as numpy/torch work runs between calls."""
    options = session_options(
        threads=threads,
        level="all" if optimize else "none",
        spinning=False,
    )
    return open_session(model_bytes, options)


def model_bytes(model: ir.Model, extra_outputs: list[str] | tuple[str, ...] = ()) -> bytes:
    """Serialize `model`, adding the named intermediate values as graph outputs."""
    proto = ir.to_proto(model)
    if extra_outputs:
        have = {o.name for o in proto.graph.output}
        for name in extra_outputs:
            if name not in have:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    return proto.SerializeToString()


def ensure_types(model: ir.Model) -> bool:
    """Run ONNX shape inference when some node output has no element type (the planner
    must know which tensors are float). Returns whether inference ran."""
    if all(v.dtype is not None for n in model.graph for v in n.outputs):
        return False
    from onnx_ir.passes.common import ShapeInferencePass

    ShapeInferencePass(strict_mode=False)(model)
    return True


def clone(model: ir.Model) -> ir.Model:
    """A deep copy (through the protobuf form; initializers are copied)."""
    return ir.from_proto(ir.to_proto(model))


def components(joined: Iterable[Iterable[T]]) -> list[list[T]]:
    """The connected components of the items that `joined` puts together (each inner
    iterable's items belong to one component; a lone item is a component of its own),
    each in the order its items were first seen, the components by their first item."""
    parent: dict[T, T] = {}

    def root(x: T) -> T:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for items in joined:
        first: T | None = None
        for x in items:
            if first is None:
                first = root(x)
            else:
                parent[root(x)] = first
    out: dict[T, list[T]] = {}
    for x in parent:
        out.setdefault(root(x), []).append(x)
    return list(out.values())
