"""Checks on a user's ONNX file that need more than its structure: does onnxruntime
load it, and are its weights finite.

The structural checks (operators, dangling inputs, cycles, initializer sizes) run
when the file is read (`compiler.ground.io.load_onnx_proto`). What is left are the
things only a runtime knows (an initializer whose dims make a Conv weight of rank
0, an attribute out of range, types that do not fit an operator): onnxruntime
creating a session on the unoptimized graph is the judge, before any pass runs,
so such a file gets exit 4 with onnxruntime's reason instead of a pass failing
half-way (onnxsim then printed tracebacks of its own to the terminal).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.ground.errors import InvalidInput

log = logging.getLogger(__name__)

#: Domains onnxruntime's CPU build runs; a model using others (TensorRT plugins, say)
#: cannot be judged by onnxruntime and is left to the target.
_ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
#: The standard domains every target parses.
_STANDARD = ("", "ai.onnx", "ai.onnx.ml")
#: Serialized protobufs above this cannot be handed to onnxruntime in memory.
_MAX_PROTO_BYTES = 2**31 - 1


def check_loads_in_onnxruntime(proto: onnx.ModelProto, name: str) -> None:
    """Refuse (exit 4) a model onnxruntime will not create a session for."""
    domains = {n.domain for n in proto.graph.node}
    if not domains <= set(_ORT_DOMAINS) or proto.ByteSize() > _MAX_PROTO_BYTES:
        return
    import onnxruntime as ort

    from compiler.ground.sessions import CPU, session_options

    try:
        ort.InferenceSession(
            proto.SerializeToString(), session_options(level="none", log_severity=4), CPU
        )
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types; all mean "invalid"
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(e).split()))
        raise InvalidInput(f"{name} does not load in onnxruntime: {reason[:300]}") from None


def nonfinite_weights(proto: onnx.ModelProto) -> list[str]:
    """Warnings for float initializers holding NaN or Inf (a broken export or training run):
    the compile goes on, but its numbers mean little, and the report says so."""
    warnings = []
    for t in proto.graph.initializer:
        if t.data_type not in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
        ):
            continue
        a = numpy_helper.to_array(t)
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            warnings.append(f"weight {t.name!r} holds {bad} NaN/Inf value(s) of {a.size}")
    for w in warnings:
        log.warning(w)
    return warnings


def check_custom_domains(proto: onnx.ModelProto, target: str, *, standard_only: bool) -> None:
    """Operators of other domains (com.microsoft's contrib ops) pass through untouched to a
    runtime that runs them; a target that parses standard ONNX only (TensorRT without
    plugins) refuses them here, by name, before any work."""
    if not standard_only:
        return
    custom = sorted(
        {f"{n.domain}.{n.op_type}" for n in proto.graph.node if n.domain not in _STANDARD}
    )
    if custom:
        shown = ", ".join(custom[:5]) + (f" and {len(custom) - 5} more" if len(custom) > 5 else "")
        raise InvalidInput(
            f"target {target} runs standard ONNX operators only; the model uses {shown}: "
            "compile it for --target cpu or cuda (onnxruntime runs them)"
        )


def check_float32_for_int8(proto: onnx.ModelProto) -> None:
    """INT8 quantizes float32 tensors (QuantizeLinear takes float32 on every runtime we
    lower to); a model that computes in float16 or bfloat16 is refused before any work
    rather than after calibration, when its artifact would not load."""
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    inits = {t.name for t in proto.graph.initializer}
    tensors = [
        (vi.name, vi.type.tensor_type.elem_type) for vi in proto.graph.input if vi.name not in inits
    ] + [(t.name, t.data_type) for t in proto.graph.initializer]
    found = next((name for name, dtype in tensors if dtype in half), None)
    if found is not None:
        raise InvalidInput(
            f"INT8 quantizes float32 models, and this one computes in 16-bit floats "
            f"({found!r}): export it in float32, or use --precision fp16"
        )
