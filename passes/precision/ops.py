"""How a node computes in float16: which of its inputs and outputs change type.

A node's float16 form is read from its ONNX schema: a float32 input becomes
float16 when its formal type is a type parameter that admits ``tensor(float16)``;
a float32 output becomes float16 when its type parameter is one of those. Inputs
of a fixed type (Resize's ``scales``, Dropout's ``ratio``) and outputs whose type
an attribute sets (LayerNormalization's ``Mean``, typed by ``stash_type``) stay
float32. Two ops set their output type by an attribute that the conversion
rewrites: Cast (``to=FLOAT`` becomes ``FLOAT16``) and ConstantOfShape (its
``value``). Constant nodes are not converted here: they are constants, copied or
converted where their readers need float16 (`passes.precision.rewrite`).

Element types come from the model's own value types, completed by ONNX shape
inference on a serialized copy (the model is not touched); a value whose type is
still unknown, or that is not a tensor, has ``UNDEFINED``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

__all__ = [
    "EXACT_OPS",
    "FLOAT",
    "FLOAT16",
    "NEUTRAL_OPS",
    "Slots",
    "Types",
    "element_types",
    "float16_form",
    "float16_attributes",
    "reads_float32",
    "has_subgraph",
]

FLOAT = ir.DataType.FLOAT
FLOAT16 = ir.DataType.FLOAT16
UNDEFINED = ir.DataType.UNDEFINED

#: Element type of every value of the main graph (UNDEFINED: unknown or not a tensor).
Types = Mapping[ir.Value, ir.DataType]

#: Ops that move or select values: given float16 inputs their float16 result is exact,
#: so they need no error measurement (their range is still checked).
EXACT_OPS = frozenset(
    {
        "Abs",
        "Compress",
        "Concat",
        "DepthToSpace",
        "Dropout",
        "Expand",
        "Flatten",
        "Gather",
        "GatherElements",
        "GatherND",
        "Identity",
        "Max",
        "MaxPool",
        "Min",
        "Neg",
        "Pad",
        "ReduceMax",
        "ReduceMin",
        "Relu",
        "Reshape",
        "Slice",
        "SpaceToDepth",
        "Split",
        "Squeeze",
        "Tile",
        "Transpose",
        "Trilu",
        "Unsqueeze",
    }
)

#: Ops that never read their input's values: they take it in whatever precision it has.
NEUTRAL_OPS = frozenset({"Shape", "Size"})

#: Ops whose output type is a type parameter of its own that follows the input's type
#: unless an attribute says otherwise: their float16 form is not decidable from the schema.
_FOLLOWS_INPUT = frozenset(
    {"EyeLike", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
)
_FLOAT16_TYPE = "tensor(float16)"


@dataclass(frozen=True)
class Slots:
    """A node's float16 form: the indices of its float32 inputs and outputs that become
    float16 (its other float32 inputs and outputs stay float32)."""

    inputs: frozenset[int]
    outputs: frozenset[int]


def element_types(model: ir.Model) -> dict[ir.Value, ir.DataType]:
    """The element type of every value of the main graph (see the module docstring)."""
    values: list[ir.Value] = [*model.graph.inputs, *model.graph.initializers.values()]
    values.extend(v for node in model.graph for v in node.outputs)
    types: dict[ir.Value, ir.DataType] = {}
    missing = []
    for value in values:
        if isinstance(value.type, ir.TensorType) and value.dtype is not None:
            types[value] = value.dtype
        elif value.const_value is not None:
            types[value] = value.const_value.dtype
        elif value.type is not None and not isinstance(value.type, ir.TensorType):
            types[value] = UNDEFINED
        else:
            missing.append(value)
    if missing:
        inferred = _inferred_types(model)
        for value in missing:
            types[value] = inferred.get(value.name or "", UNDEFINED)
    return types


def _inferred_types(model: ir.Model) -> dict[str, ir.DataType]:
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is best effort: an unknown type keeps its node float32
        return {}
    graph = proto.graph
    found: dict[str, ir.DataType] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            found[vi.name] = ir.DataType(vi.type.tensor_type.elem_type)
    return found


def reads_float32(node: ir.Node, types: Types) -> bool:
    """Some input or output of `node` is a float32 tensor."""
    return any(v is not None and types.get(v) == FLOAT for v in (*node.inputs, *node.outputs))


def has_subgraph(node: ir.Node) -> bool:
    return any(
        attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
        for attr in node.attributes.values()
    )


def float16_form(node: ir.Node, types: Types, opset: int) -> Slots | str:
    """`node`'s float16 form, or why it has none (a default-domain node with float32
    tensors, no subgraph)."""
    if any(v is not None and types.get(v, UNDEFINED) == UNDEFINED for v in node.inputs):
        return "an input's element type is unknown or not a tensor"
    if any(types.get(v, UNDEFINED) == UNDEFINED for v in node.outputs if v.name or v.uses()):
        return "an output's element type is unknown or not a tensor"
    if node.op_type in _FOLLOWS_INPUT:
        return "its output type follows its input unless an attribute sets it"
    if node.op_type == "Cast":
        converts = node.attributes.get_int("to", 0) == FLOAT.value
        return Slots(frozenset(), frozenset({0}) if converts else frozenset())
    if node.op_type == "ConstantOfShape":
        return Slots(frozenset(), frozenset({0}))
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return f"no ONNX schema for {node.op_type} at opset {opset}"
    admits = {
        c.type_param_str: _FLOAT16_TYPE in c.allowed_type_strs for c in schema.type_constraints
    }
    inputs: set[int] = set()
    params: set[str | None] = set()
    for i, value in enumerate(node.inputs):
        formal = _formal(schema.inputs, i)
        if value is None or types.get(value) != FLOAT or formal is None:
            continue
        if admits.get(formal, False):
            inputs.add(i)
            params.add(formal)
    outputs = {
        j
        for j, value in enumerate(node.outputs)
        if types.get(value) == FLOAT and _formal(schema.outputs, j) in params
    }
    if not inputs and not outputs:
        return "its ONNX schema admits no float16 for its float32 tensors"
    return Slots(frozenset(inputs), frozenset(outputs))


def _formal(params: Sequence[onnx.defs.OpSchema.FormalParameter], index: int) -> str | None:
    if index < len(params):
        return str(params[index].type_str)
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    if params and params[-1].option == variadic:
        return str(params[-1].type_str)
    return None


def float16_attributes(node: ir.Node) -> list[ir.Attr]:
    """`node`'s attributes in its float16 form: Cast to float16, ConstantOfShape's value
    in float16 (zero when absent); others unchanged."""
    attrs = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
    if node.op_type == "Cast":
        return [ir.AttrInt64("to", FLOAT16.value) if a.name == "to" else a for a in attrs]
    if node.op_type == "ConstantOfShape":
        value = node.attributes.get("value")
        array = np.zeros(1, np.float32) if value is None else value.as_tensor().numpy()
        rest = [a for a in attrs if a.name != "value"]
        return [*rest, ir.AttrTensor("value", ir.tensor(array.astype(np.float16)))]
    return attrs
