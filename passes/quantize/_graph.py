"""Small graph helpers shared by the quantization modules (constants, names, ORT sessions)."""

from __future__ import annotations

import onnx_ir as ir

# re-exported: one definition each
from passes.fusion._common import constant, new_initializer, value_names  # noqa: F401

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


def attr_ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    a = node.attributes.get(name)
    return list(default) if a is None else [int(i) for i in a.as_ints()]


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


def ort_session(model_bytes: bytes, *, threads: int = 0, optimize: bool = False):  # type: ignore[no-untyped-def]
    """A CPU onnxruntime session: ENABLE_ALL with `optimize` (the deployed integer
    kernels), else no graph optimization at all (DISABLE_ALL). The latter is the exact
    Q/DQ arithmetic: even onnxruntime's BASIC level rewrites Q/DQ graphs (e.g. its
    weight/bias quantization quantizes a float weight that follows a DQ per tensor)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    # analysis sessions fetch many intermediate tensors: without the arena their memory
    # goes back after each run instead of staying at the largest batch's peak
    opts.enable_cpu_mem_arena = optimize
    # idle worker threads must not spin: numpy/torch work runs between our session calls
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def model_bytes(model: ir.Model, extra_outputs: list[str] | tuple[str, ...] = ()) -> bytes:
    """Serialize `model`, adding the named intermediate values as graph outputs."""
    proto = ir.to_proto(model)
    if extra_outputs:
        import onnx

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
