"""Int8 weights of layers that compute in float, stored so onnxruntime folds them once.

A layer kept in float (the float stem, `--auto-fallback`'s layers, a Conv whose
output feeds a float layer) still stores its weight as int8 so the artifact stays
a quarter of the FP32 size. Behind a DequantizeLinear that weight is dequantized on
every call: onnxruntime deliberately never constant-folds DequantizeLinear (the
node marks a Q/DQ group for its integer kernels), so the float Conv also gets no
pre-packed NCHWc weights. Written as

    Mul(Cast(W_int8, to=FLOAT), scale)        (scale broadcast on the channel axis)

the same numbers (DequantizeLinear with zero point 0 computes ``float(q) * s``) are
folded into a float initializer when the session is created. Measured on the zoo's
MobileNetV2, onnxruntime CPU, 2 threads, block-paired latency against FP32: default
INT8 (float stem) 0.575x → 0.529x, 8 further float layers 1.01x → 0.87x (development
run); bench/results/quantize_compare.json: 0.571x → 0.520x, 17 float layers 1.33x → 0.82x.

Only for onnxruntime (`QuantSpec.fold_float_weights`): TensorRT reads weight DQs itself.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes import graph_tools

__all__ = ["fold_float_weights", "int8_weight", "runs_integer"]

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _from_dq(value: ir.Value | None) -> ir.Node | None:
    p = value.producer() if value is not None else None
    return p if p is not None and graph_tools.is_std(p, "DequantizeLinear") else None


def _output_quantized(node: ir.Node) -> bool:
    """The output reaches a QuantizeLinear, directly or through one Relu/Clip."""
    out = node.outputs[0] if node.outputs else None
    for _ in range(2):
        if out is None:
            return False
        users = [u.node for u in out.uses()]
        if users and all(graph_tools.is_std(u, "QuantizeLinear") for u in users):
            return True
        if len(users) != 1 or not graph_tools.is_std(users[0], "Relu", "Clip"):
            return False
        out = users[0].outputs[0]
    return False


def runs_integer(node: ir.Node) -> bool:
    """Whether onnxruntime's CPU provider fuses this weighted node into an integer
    kernel: its data input comes from a DQ and (Conv, ConvTranspose) its output goes
    to a Q. QGemm and MatMulIntegerToFloat also write float, so Gemm/MatMul need
    only the DQ input."""
    if not node.inputs or _from_dq(node.inputs[0]) is None:
        return False
    return graph_tools.is_std(node, "Gemm", "MatMul") or _output_quantized(node)


def _folds(dq: ir.Node) -> bool:
    """A constant int8/int32 DQ with zero point 0 read only by float-computing layers."""
    src = dq.inputs[0]
    if src is None or graph_tools.constant(src) is None:
        return False
    if src.dtype not in (ir.DataType.INT8, ir.DataType.INT32):
        return False
    if len(dq.inputs) > 2 and dq.inputs[2] is not None:
        zp = graph_tools.constant(dq.inputs[2])
        if zp is None or np.any(zp != 0):
            return False
    users = list(dq.outputs[0].uses())
    return bool(users) and all(
        graph_tools.is_std(u.node, *_WEIGHTED) and u.idx > 0 and not runs_integer(u.node)
        for u in users
    )


def fold_float_weights(graph: ir.Graph) -> int:
    """Rewrite the weight (and int32 bias) DQs of float-computing layers as Cast → Mul;
    returns how many. Numerically identical: float(q) * s either way."""
    taken = graph_tools.value_names(graph)
    taken.update(n.name for n in graph if n.name)
    done = 0
    for dq in [n for n in graph if graph_tools.is_std(n, "DequantizeLinear")]:
        if not _folds(dq):
            continue
        q = graph_tools.constant(dq.inputs[0])
        scale = graph_tools.constant(dq.inputs[1])
        assert q is not None and scale is not None
        shape = [1] * q.ndim
        if scale.ndim and q.ndim:
            shape[graph_tools.attr_int(dq, "axis", 1) % q.ndim] = -1
        base = dq.name or "weight"
        s = graph_tools.new_initializer(graph, f"{base}_scale", scale.reshape(shape))
        taken.add(s.name or "")
        cast_out = ir.Value(name=graph_tools.unique_name(graph, f"{base}_cast", taken))
        cast_out.type = ir.TensorType(ir.DataType.FLOAT)
        cast = ir.node(
            "Cast",
            [dq.inputs[0]],
            {"to": ir.DataType.FLOAT},
            outputs=[cast_out],
            name=graph_tools.unique_name(graph, f"{base}_Cast", taken),
        )
        mul = ir.node(
            "Mul", [cast_out, s], name=graph_tools.unique_name(graph, f"{base}_Mul", taken)
        )
        mul.outputs[0].name = graph_tools.unique_name(graph, f"{base}_folded", taken)
        mul.outputs[0].type = dq.outputs[0].type
        mul.outputs[0].shape = dq.outputs[0].shape
        graph.insert_before(dq, [cast, mul])
        dq.outputs[0].replace_all_uses_with(mul.outputs[0])
        old_scale, old_zp = dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else None
        graph.remove(dq, safe=True)
        for v in (old_scale, old_zp):
            if v is not None and not v.uses() and v.name and v.name in graph.initializers:
                graph.initializers.pop(v.name)
        done += 1
    return done


def int8_weight(value: ir.Value | None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(integers, per-channel or scalar scale, axis) of a weight stored as int8, in
    either form: ``DequantizeLinear(q, s, 0, axis)`` or ``Mul(Cast(q), s)``."""
    p = value.producer() if value is not None else None
    if p is None:
        return None
    if graph_tools.is_std(p, "DequantizeLinear"):
        q, s = graph_tools.constant(p.inputs[0]), graph_tools.constant(p.inputs[1])
        if q is None or s is None:
            return None
        return q, s, graph_tools.attr_int(p, "axis", 1) % max(q.ndim, 1)
    if graph_tools.is_std(p, "Mul"):
        cast = p.inputs[0].producer() if p.inputs[0] is not None else None
        s = graph_tools.constant(p.inputs[1])
        if cast is None or not graph_tools.is_std(cast, "Cast") or s is None:
            return None
        q = graph_tools.constant(cast.inputs[0])
        if q is None:
            return None
        channel_axes = [i for i, d in enumerate(s.shape) if d != 1]
        if s.size == 1 or not channel_axes:
            return q, s.reshape(()), 1 % max(q.ndim, 1)
        return q, s.reshape(-1), channel_axes[0]
    return None
