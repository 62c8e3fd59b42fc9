"""Weight bytes per op type: where an ONNX model's size goes, for report.html.

Each initializer is charged to the op type that consumes it; a Q/DQ/Cast node in
between (an INT8 weight behind its DequantizeLinear, an FP16 weight behind a
Cast) is looked through, so a quantized Conv's int8 weight still counts as Conv.
An initializer with consumers of several op types is split evenly between them.
Only the graph's own initializers are read (no external data is loaded).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx

_THROUGH = frozenset({"DequantizeLinear", "QuantizeLinear", "Cast", "Reshape", "Transpose"})


def op_type_bytes(path: Path) -> dict[str, int]:
    """{op type: bytes of the initializers it consumes} for an ONNX file."""
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            if name:
                consumers[name].append(node)

    def owners(value: str, depth: int = 0) -> set[str]:
        ops: set[str] = set()
        for node in consumers.get(value, []):
            if node.op_type in _THROUGH and depth < 4 and node.output:
                ops |= owners(node.output[0], depth + 1) or {node.op_type}
            else:
                ops.add(node.op_type)
        return ops

    sizes: dict[str, float] = defaultdict(float)
    for init in g.initializer:
        nbytes = len(init.raw_data) if init.HasField("raw_data") else _typed_bytes(init)
        ops = owners(init.name) or {"(unused)"}
        for op in ops:
            sizes[op] += nbytes / len(ops)
    return {op: int(round(v)) for op, v in sorted(sizes.items(), key=lambda kv: -kv[1])}


def _typed_bytes(init: onnx.TensorProto) -> int:
    """Bytes of an initializer stored in typed fields (not raw_data)."""
    n = 1
    for d in init.dims:
        n *= d
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return n * itemsize
