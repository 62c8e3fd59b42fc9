"""`edgec inspect`: what is in a model, and which targets can run it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx

from compiler.ground.errors import first_line
from compiler.ground.sessions import CPU, open_session
from compiler.sources import ModelSource
from targets.base import Target


def _shape(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in vi.type.tensor_type.shape.dim
    ]


def inspect_source(source: ModelSource) -> dict[str, Any]:
    """Op histogram, parameter count, size, opset, inputs/outputs, target compatibility."""
    g = source.proto.graph
    ops = Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
        for n in g.node
    )
    inits = {i.name for i in g.initializer}
    return {
        "name": source.name,
        "source": source.kind,
        "sha256": source.sha256,
        "size_bytes": source.proto.ByteSize(),
        "params": int(sum(int(np.prod(t.dims)) for t in g.initializer)),
        "opset": {o.domain or "ai.onnx": o.version for o in source.proto.opset_import},
        "nodes": len(g.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": [
            {
                "name": i.name,
                "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type),
                "shape": _shape(i),
            }
            for i in g.input
            if i.name not in inits
        ],
        "outputs": [
            {
                "name": o.name,
                "dtype": onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type),
                "shape": _shape(o),
            }
            for o in g.output
        ],
        "targets": target_compatibility(source.proto),
    }


def target_compatibility(proto: onnx.ModelProto) -> dict[str, str]:
    """Per target: 'ok', or why it cannot run this model here."""
    from targets.registry import get_target, target_names

    result = {}
    for name in target_names():
        target = get_target(name)
        reason = target.unavailable_reason()
        if reason:
            result[name] = f"unavailable here: {reason}"
            continue
        result[name] = _loads_in_ort(proto, target)
    return result


def _loads_in_ort(proto: onnx.ModelProto, target: Target) -> str:
    providers = getattr(target, "providers", CPU)
    try:
        open_session(proto.SerializeToString(), providers=providers)
    except Exception as e:
        first = first_line(e)
        return f"not supported: {first[:200]}"
    return "ok"
