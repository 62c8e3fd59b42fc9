"""Apply a plan: float16 nodes, Casts at every float32/float16 boundary, constants.

Every float32 tensor of the main graph gets one precision: the output of a
float16 node (through a converted slot, `ops.Slots`) is float16; a graph input is
float16 unless `keep_io_types`; everything else stays float32. Each reader then
asks for a precision per input: a float16 node for its converted slots, a float32
node (and any other slot) for float32; Cast, Shape and Size take either. Where
the two differ:

- a constant (initializer or Constant node) whose readers all want float16 is
  converted in place; one read by both keeps its float32 form for the float32
  readers and gains a float16 copy for the others (a copy, not a Cast: exact, and
  nothing left to do at run time);
- any other value gets one Cast per target type, placed right after its producer
  (at the top of the graph for graph inputs), shared by all readers that need it;
- graph inputs: float16 unless `keep_io_types` (an input that is also an
  initializer, a default the caller may override, stays float32);
- graph outputs: float32 with `keep_io_types`, else float16; a Cast takes over the
  output's name when the producer's precision differs (a constant graph output is
  float16 only if converted in place). Values of the main graph read inside a kept
  If/Loop/Scan body are readers that want float32.

Integer, bool and double tensors are never touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.precision.ops import FLOAT, FLOAT16, NEUTRAL_OPS, Types, float16_attributes
from passes.precision.plan import Plan

__all__ = ["RewriteCounts", "rewrite"]


@dataclasses.dataclass(frozen=True)
class RewriteCounts:
    """What the rewrite added: Casts, constants converted in place, float16 copies."""

    casts: int
    constants_converted: int
    constants_copied: int


@dataclasses.dataclass
class _Demand:
    node: ir.Node | None  # None: a graph output
    index: int
    want: ir.DataType


class _Rewriter:
    def __init__(self, model: ir.Model, plan: Plan, types: Types, keep_io_types: bool) -> None:
        self.model, self.graph, self.plan, self.types = model, model.graph, plan, types
        self.keep_io_types = keep_io_types
        self.half: set[ir.Value] = {
            node.outputs[j] for node, slots in plan.fp16.items() for j in slots.outputs
        }
        if not keep_io_types:
            self.half.update(
                v for v in self.graph.inputs if types.get(v) == FLOAT and not v.is_initializer()
            )
        self.taken = graph_tools.value_names(self.graph)
        self.node_names = {n.name for n in self.graph if n.name}
        self.casts: dict[tuple[ir.Value, ir.DataType], ir.Value] = {}
        self.output_casts: dict[ir.Value, ir.Value] = {}
        self.converted = self.copied = 0

    def demands(self) -> dict[ir.Value, list[_Demand]]:
        found: dict[ir.Value, list[_Demand]] = {}
        for node in self.graph:
            for i, value in enumerate(node.inputs):
                want = self._want(node, i, value)
                if value is not None and want is not None:
                    found.setdefault(value, []).append(_Demand(node, i, want))
        for node in self._body_nodes():
            for i, value in enumerate(node.inputs):
                if value is not None and value.graph is self.graph and self._is_float(value):
                    found.setdefault(value, []).append(_Demand(node, i, FLOAT))
        for k, value in enumerate(self.graph.outputs):
            if self._is_float(value) and (self.keep_io_types or not _is_constant(value)):
                want = FLOAT if self.keep_io_types else FLOAT16
                found.setdefault(value, []).append(_Demand(None, k, want))
        return found

    def _is_float(self, value: ir.Value) -> bool:
        return self.types.get(value) == FLOAT

    def _want(self, node: ir.Node, i: int, value: ir.Value | None) -> ir.DataType | None:
        if value is None or not self._is_float(value) or graph_tools.is_std(node, *NEUTRAL_OPS):
            return None
        slots = self.plan.fp16.get(node)
        if slots is None:
            return FLOAT
        if i in slots.inputs:
            return FLOAT16
        return None if node.op_type == "Cast" else FLOAT

    def _body_nodes(self) -> Iterator[ir.Node]:
        for node in self.graph:
            for attr in node.attributes.values():
                graphs = attr.value if attr.type == ir.AttributeType.GRAPHS else [attr.value]
                if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                    for sub in graphs:
                        yield from ir.traversal.RecursiveGraphIterator(sub)

    def run(self) -> RewriteCounts:
        for value, demands in self.demands().items():
            if _is_constant(value):
                self._constant(value, demands)
            else:
                self._value(value, demands)
        for node in self.plan.fp16:
            if node.op_type in ("Cast", "ConstantOfShape"):
                for attr in float16_attributes(node):
                    node.attributes[attr.name] = attr
        for value in self.half:
            value.type = ir.TensorType(FLOAT16)
        casts = len(self.casts) + len(self.output_casts)
        return RewriteCounts(casts, self.converted, self.copied)

    def _constant(self, value: ir.Value, demands: list[_Demand]) -> None:
        if all(d.want == FLOAT for d in demands):
            return
        array = graph_tools.constant(value)
        assert array is not None
        if all(d.want == FLOAT16 for d in demands):
            self._convert_in_place(value, array)
            self.converted += 1
            return
        copy = self._constant_copy(value, array)
        self.copied += 1
        for d in demands:
            if d.want == FLOAT16 and d.node is not None:
                d.node.replace_input_with(d.index, copy)

    def _convert_in_place(self, value: ir.Value, array: np.ndarray) -> None:
        half = _half(array)
        producer = value.producer()
        if producer is not None:  # a Constant node
            for key in list(producer.attributes):
                producer.attributes.pop(key)
            producer.attributes["value"] = ir.AttrTensor("value", ir.tensor(half))
        else:
            value.const_value = ir.tensor(half, name=value.name)
        value.type = ir.TensorType(FLOAT16)

    def _constant_copy(self, value: ir.Value, array: np.ndarray) -> ir.Value:
        name = graph_tools.unique_name(self.graph, f"{value.name}_fp16", self.taken)
        producer = value.producer()
        if producer is None:
            return graph_tools.new_initializer(self.graph, name, _half(array))
        node = ir.Node(
            "",
            "Constant",
            [],
            [ir.AttrTensor("value", ir.tensor(_half(array)))],
            name=self._node_name(name),
        )
        node.outputs[0].name = name
        node.outputs[0].type = ir.TensorType(FLOAT16)
        node.outputs[0].shape = value.shape
        self.graph.insert_after(producer, node)
        return node.outputs[0]

    def _value(self, value: ir.Value, demands: list[_Demand]) -> None:
        have = FLOAT16 if value in self.half else FLOAT
        for d in demands:
            if d.want == have:
                continue
            if d.node is None:
                self._output(value, d)
            else:
                d.node.replace_input_with(d.index, self._cast(value, d.want))

    def _cast(self, value: ir.Value, to: ir.DataType) -> ir.Value:
        key = (value, to)
        if key not in self.casts:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            name = graph_tools.unique_name(self.graph, f"{value.name}_{suffix}", self.taken)
            node = ir.Node(
                "", "Cast", [value], [ir.AttrInt64("to", to.value)], name=self._node_name(name)
            )
            node.outputs[0].name = name
            node.outputs[0].type = ir.TensorType(to)
            node.outputs[0].shape = value.shape
            self._place(value, node)
            self.casts[key] = node.outputs[0]
        return self.casts[key]

    def _output(self, value: ir.Value, demand: _Demand) -> None:
        """A Cast takes over graph output `demand.index`'s name."""
        if value in self.output_casts:  # the same value listed twice as a graph output
            self.graph.outputs[demand.index] = self.output_casts[value]
            return
        name = value.name or ""
        suffix = "fp16" if value in self.half else "fp32"
        value.name = graph_tools.unique_name(self.graph, f"{name}_{suffix}", self.taken)
        cast = ir.Node(
            "", "Cast", [value], [ir.AttrInt64("to", demand.want.value)], name=self._node_name(name)
        )
        out = cast.outputs[0]
        out.name, out.type, out.shape = name, ir.TensorType(demand.want), value.shape
        self._place(value, cast)
        self.graph.outputs[demand.index] = out
        self.output_casts[value] = out

    def _place(self, value: ir.Value, node: ir.Node) -> None:
        producer = value.producer()
        if producer is not None and producer.graph is self.graph:
            self.graph.insert_after(producer, node)
        elif len(self.graph):
            self.graph.insert_before(self.graph.node(0), node)
        else:
            self.graph.append(node)

    def _node_name(self, base: str) -> str:
        name, i = f"{base}_cast" if not base.endswith("_cast") else base, 0
        stem = name
        while name in self.node_names:
            i += 1
            name = f"{stem}_{i}"
        self.node_names.add(name)
        return name


def _is_constant(value: ir.Value) -> bool:
    return not value.is_graph_input() and graph_tools.constant(value) is not None


def _half(array: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(array, dtype=np.float32).astype(np.float16)


def rewrite(model: ir.Model, plan: Plan, types: Types, keep_io_types: bool) -> RewriteCounts:
    """Apply `plan` to `model` in place (module docstring)."""
    return _Rewriter(model, plan, types, keep_io_types).run()
