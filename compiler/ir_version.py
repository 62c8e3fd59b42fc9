"""ONNX files as they come: an IR version newer than onnxruntime reads is written down
when nothing in the model needs it.

The onnx package (1.23) writes IR version 14 by default; onnxruntime 1.31 loads
IR ≤ 13 and refuses the rest, even when the file uses nothing IR 14 added. What
each newer IR adds is listed in onnx's `onnx.proto` (`enum Version`): IR 14
adds the FLOAT6E2M3 and FLOAT6E3M2 element types and `TypeProto.Opaque` outside
ONNX-ML builds. A model that uses none of these means the same at IR 13, so the
in-memory copy is stamped down (the input file is never touched); a model that
uses one, or an IR newer than this table knows, is refused (exit 4) with the
reason. Every type in the model is looked at: graph inputs, outputs, value
infos and initializers, tensor attributes and `Cast`/`CastLike`-style `to`
attributes, in subgraphs and model-local functions too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import onnx

from compiler.ground.errors import InvalidInput

log = logging.getLogger(__name__)

#: The newest ONNX IR version onnxruntime 1.31 loads.
ORT_MAX_IR_VERSION = 13

#: Element types each IR version above onnxruntime's added (onnx.proto, enum Version).
_ADDED_TYPES: dict[int, frozenset[int]] = {
    14: frozenset({onnx.TensorProto.FLOAT6E2M3, onnx.TensorProto.FLOAT6E3M2}),
}

#: Attributes whose integer value is an element type.
_TYPE_ATTRIBUTES = frozenset({"to", "dtype", "output_dtype", "stash_type"})


def fit_ir_version(proto: onnx.ModelProto, *, name: str) -> int | None:
    """Stamp `proto` down to `ORT_MAX_IR_VERSION` in place when that is exact.

    Returns the original IR version when it was lowered, None when nothing was
    needed; raises InvalidInput (exit 4) when the model needs its newer IR.
    """
    version = proto.ir_version
    if version <= ORT_MAX_IR_VERSION:
        return None
    unknown = [v for v in range(ORT_MAX_IR_VERSION + 1, version + 1) if v not in _ADDED_TYPES]
    if unknown:
        raise InvalidInput(
            f"{name} has ONNX IR version {version}; onnxruntime reads up to "
            f"{ORT_MAX_IR_VERSION} and edgec cannot tell whether the model needs IR {unknown[0]}: "
            f"save it with IR version {ORT_MAX_IR_VERSION}"
        )
    newer = frozenset().union(
        *(_ADDED_TYPES[v] for v in range(ORT_MAX_IR_VERSION + 1, version + 1))
    )
    for where, elem_type in _element_types(proto):
        if elem_type in newer:
            type_name = onnx.TensorProto.DataType.Name(elem_type)
            raise InvalidInput(
                f"{name} needs ONNX IR version {version} ({where} is {type_name}), which "
                f"onnxruntime does not read (up to {ORT_MAX_IR_VERSION})"
            )
    if _uses_opaque(proto):
        raise InvalidInput(
            f"{name} needs ONNX IR version {version} (an opaque type), which onnxruntime "
            f"does not read (up to {ORT_MAX_IR_VERSION})"
        )
    proto.ir_version = ORT_MAX_IR_VERSION
    log.info(
        "%s: IR version %d written down to %d (nothing needs it)", name, version, ORT_MAX_IR_VERSION
    )
    return version


def _graphs(proto: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    stack = [proto.graph]
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def _nodes(proto: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in _graphs(proto):
        yield from graph.node
    for function in proto.functions:
        yield from function.node


def _type_elements(where: str, tp: onnx.TypeProto) -> Iterator[tuple[str, int]]:
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        yield where, getattr(tp, kind).elem_type
    elif kind == "sequence_type":
        yield from _type_elements(where, tp.sequence_type.elem_type)
    elif kind == "optional_type":
        yield from _type_elements(where, tp.optional_type.elem_type)
    elif kind == "map_type":
        yield where, tp.map_type.key_type
        yield from _type_elements(where, tp.map_type.value_type)


def _element_types(proto: onnx.ModelProto) -> Iterator[tuple[str, int]]:
    """(where, element type) for every typed thing in the model."""
    for graph in _graphs(proto):
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            yield from _type_elements(f"value {vi.name!r}", vi.type)
        for t in graph.initializer:
            yield f"initializer {t.name!r}", t.data_type
    for node in _nodes(proto):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield f"an attribute of node {node.name!r}", attr.t.data_type
            elif attr.type == onnx.AttributeProto.INT and attr.name in _TYPE_ATTRIBUTES:
                yield f"attribute {attr.name!r} of node {node.name!r}", attr.i


def _uses_opaque(proto: onnx.ModelProto) -> bool:
    def opaque(tp: onnx.TypeProto) -> bool:
        kind = tp.WhichOneof("value")
        if kind == "opaque_type":
            return True
        if kind == "sequence_type":
            return opaque(tp.sequence_type.elem_type)
        if kind == "optional_type":
            return opaque(tp.optional_type.elem_type)
        if kind == "map_type":
            return opaque(tp.map_type.value_type)
        return False

    return any(
        opaque(vi.type)
        for graph in _graphs(proto)
        for vi in [*graph.input, *graph.output, *graph.value_info]
    )
