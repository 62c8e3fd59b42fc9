"""Models and checks shared by the FP16 tests: ONNX text models, the pass contract,
onnxruntime runs; the random-init transformers come from `bench.foreign`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from bench.foreign import bert_bytes, bert_feeds, gpt2_bytes, gpt2_feeds
from compiler.ground.sessions import open_session
from passes.precision import Fp16Options, Fp16Pass, Fp16PassResult

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
F16 = onnx.TensorProto.FLOAT16
F32 = onnx.TensorProto.FLOAT


def build(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text (HEADER is prepended), numpy arrays as named initializers."""
    proto = onnx.parser.parse_model(HEADER + text)
    for name, array in initializers.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def serialized(model: ir.Model | onnx.ModelProto) -> bytes:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString(deterministic=True)


def convert(
    proto: onnx.ModelProto, calibration: Any, **options: Any
) -> tuple[Fp16PassResult, onnx.ModelProto]:
    """Run the pass and hold it to the contract: full ONNX check, `modified` exact, a
    second run changes nothing and says so, and no integer/bool tensor is touched
    (initializers, Constant values, graph inputs/outputs)."""
    pass_ = Fp16Pass(calibration, Fp16Options(**options))
    result = pass_(ir.from_proto(proto))
    assert isinstance(result, Fp16PassResult)
    after = ir.to_proto(result.model)
    onnx.checker.check_model(after, full_check=True)
    once = serialized(after)
    assert result.modified == (once != serialized(ir.from_proto(proto)))
    again = pass_(result.model)
    assert again.modified is False
    assert serialized(again.model) == once
    assert _non_float(after) == _non_float(proto)
    return result, after


def _non_float(proto: onnx.ModelProto) -> dict[str, bytes | int]:
    """Every non-float tensor of the main graph, by name (initializers, Constant values)
    and the element types of non-float graph inputs/outputs."""
    floats = {F16, F32, onnx.TensorProto.DOUBLE}
    found: dict[str, bytes | int] = {
        t.name: t.SerializeToString() for t in proto.graph.initializer if t.data_type not in floats
    }
    for node in proto.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.t.data_type and attr.t.data_type not in floats:
                found[node.output[0]] = attr.t.SerializeToString()
    for v in [*proto.graph.input, *proto.graph.output]:
        if v.type.tensor_type.elem_type not in floats:
            found["io:" + v.name] = v.type.tensor_type.elem_type
    return found


def run(model: ir.Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs, onnxruntime CPU; float inputs cast to what the model declares."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    declared = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    fixed = {k: v.astype(np.float16) if declared.get(k) == F16 else v for k, v in feeds.items()}
    return list(open_session(proto.SerializeToString()).run(None, fixed))


def casts(proto: onnx.ModelProto) -> list[int]:
    """The `to` of every Cast of the main graph."""
    return [
        onnx.helper.get_attribute_value(a)
        for n in proto.graph.node
        if n.op_type == "Cast"
        for a in n.attribute
        if a.name == "to"
    ]


def half_initializers(proto: onnx.ModelProto) -> list[str]:
    return sorted(t.name for t in proto.graph.initializer if t.data_type == F16)


def io_types(proto: onnx.ModelProto) -> tuple[list[int], list[int]]:
    graph = proto.graph
    return (
        [v.type.tensor_type.elem_type for v in graph.input],
        [v.type.tensor_type.elem_type for v in graph.output],
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def size_ratio(after: onnx.ModelProto, before: onnx.ModelProto) -> float:
    return len(after.SerializeToString()) / len(before.SerializeToString())


# --- architectures nobody here wrote: random-init transformers, exported by torch ----------


__all__ = ["bert_bytes", "bert_feeds", "gpt2_bytes", "gpt2_feeds"]  # from bench.foreign
