"""Channel groups: which output channels of which layers must be pruned together.

This module only *analyses* a graph; `channel.py` decides what to keep and edits
the model.  The analysis walks the nodes in topological order and gives every
tensor whose axis 1 carries prunable channels a *layout*: a list of segments,
each `(group, size, inner)`, meaning `size` channels of `group` laid out along
axis 1, each channel covering `inner` consecutive positions (`inner` > 1 only
after Flatten, where channel c maps to features [c*H*W, (c+1)*H*W)).

Sources (they open a group of C output channels):
  Conv with group=1, Gemm (transA=0), 2-D MatMul, each with a constant,
  single-use weight (and bias).

Channels flow unchanged through (the layout is copied; per-channel parameters
are recorded as edits):
  elementwise unary ops (Relu, Clip, HardSwish, Sigmoid, ...), BatchNormalization
  and InstanceNormalization (parameters sliced), pools, Reduce* over axes other
  than 0/1, depthwise Conv (weight [C,1,kh,kw], group=C: weight and bias sliced,
  `group` rewritten), binary elementwise ops with a constant operand (sliced when
  it is per-channel, untouched when it broadcasts) or with another laid-out
  operand (residual Add, x*sigmoid(x): the groups are *joined* and pruned
  together), Concat on axis 1 (segments appended: offsets follow), Flatten with
  axis=1 and static spatial dims (segments' `inner` multiplied by H*W).

Consumers that reduce over the channels get their weight's input axis sliced:
  Conv (group=1), Gemm (B's K axis), MatMul (B's rows).

Refused (every group reaching it is marked and kept whole, with the reason):
  graph outputs, unknown or shape-changing consumers (Reshape, Transpose,
  Split, Slice, Softmax, Resize, Shape, ...), uses inside subgraphs, grouped
  non-depthwise Conv, depthwise multipliers, shared or non-constant weights and
  parameters, per-channel non-constant operands, unknown ranks or dynamic
  spatial dims where they matter, and Concat/Add whose segments do not line up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from passes.graph_tools import (
    attr_int,
    attr_ints,
    constant_initializer,
    is_default_domain,
    set_initializer,
    static_shapes,
    value_shape,
)

_UNARY = frozenset(
    {
        "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "Elu",
        "Selu", "Celu", "Gelu", "Softplus", "Softsign", "Mish", "Identity", "Dropout", "Neg",
        "Abs", "Erf", "ThresholdedRelu", "Cast",
    }
)  # fmt: skip
_POOLS = frozenset(
    {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
)
_NORMS = frozenset({"BatchNormalization", "InstanceNormalization"})
_REDUCES = frozenset(
    {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd"}
)
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"})


@dataclasses.dataclass(frozen=True)
class Segment:
    group: int | None  # None: channels that are not prunable (kept whole)
    size: int
    inner: int = 1


Layout = tuple[Segment, ...]


def layout_width(layout: Layout) -> int:
    return sum(s.size * s.inner for s in layout)


@dataclasses.dataclass
class Source:
    """A layer whose output channels open a group."""

    node: ir.Node
    weight: ir.Value
    out_axis: int
    bias: ir.Value | None
    bias_axis: int | None  # None: the bias broadcasts (scalar / size 1)

    @property
    def channels(self) -> int:
        shape = self.weight.shape
        assert shape is not None
        dim = shape[self.out_axis]
        assert isinstance(dim, int)  # a constant weight has a static shape
        return dim

    def weight_array(self) -> np.ndarray:
        assert self.weight.const_value is not None
        return self.weight.const_value.numpy()


@dataclasses.dataclass
class Edit:
    """A change to apply once the kept channels are known: `apply(positions)`."""

    layout: Layout
    apply: Callable[[np.ndarray], None]


class ChannelAnalysis:
    """Groups of channels of one graph, their sources, edits and refusals."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.shapes = static_shapes(model)
        self.layouts: dict[ir.Value, Layout] = {}
        self._parent: list[int] = []
        self._size: list[int] = []
        self._sources: list[list[Source]] = []
        self._refused: dict[int, list[str]] = {}
        self.edits: list[Edit] = []
        # (node, layout of its data input): layers that reduce over the channels
        # (their weight's input axis is sliced) or depthwise convs (output axis sliced)
        self.consumers: list[tuple[ir.Node, Layout]] = []
        self.depthwise: list[tuple[ir.Node, Layout]] = []
        self._handled: set[tuple[int, int]] = set()
        self._order: dict[int, int] = {}
        for i, node in enumerate(self.graph):
            self._order[id(node)] = i
            self._visit(node)
        self._check_uses()

    # -- union-find ----------------------------------------------------------
    def find(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def _new_group(self, size: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(size)
        self._sources.append([])
        return len(self._parent) - 1

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[rb] = ra
            self._sources[ra].extend(self._sources[rb])
            self._sources[rb] = []

    def refuse(self, layout: Layout | None, reason: str) -> None:
        for seg in layout or ():
            if seg.group is not None:
                self._refused.setdefault(seg.group, []).append(reason)

    # -- results -------------------------------------------------------------
    def groups(self) -> list[int]:
        """Root ids of groups that have at least one source, in graph order."""
        return [g for g in range(len(self._parent)) if self.find(g) == g and self._sources[g]]

    def sources(self, root: int) -> list[Source]:
        """The group's source layers, in graph order."""
        return sorted(self._sources[root], key=lambda s: self._order[id(s.node)])

    def size(self, root: int) -> int:
        return self._size[root]

    def refusals(self, root: int) -> list[str]:
        reasons: list[str] = []
        for g, rs in self._refused.items():
            if self.find(g) == root:
                reasons.extend(r for r in rs if r not in reasons)
        return reasons

    def positions(self, layout: Layout, kept: dict[int, np.ndarray]) -> np.ndarray:
        """Indices along axis 1 that survive, given kept channels per root group."""
        parts, offset = [], 0
        for seg in layout:
            ch = kept.get(self.find(seg.group)) if seg.group is not None else None
            if ch is None:
                ch = np.arange(seg.size)
            pos = (ch[:, None] * seg.inner + np.arange(seg.inner)[None, :]).reshape(-1)
            parts.append(pos + offset)
            offset += seg.size * seg.inner
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # -- helpers -------------------------------------------------------------
    def _shape(self, value: ir.Value | None) -> tuple[int | None, ...] | None:
        return None if value is None else value_shape(value, self.shapes)

    def _rank(self, value: ir.Value | None) -> int | None:
        shape = self._shape(value)
        return None if shape is None else len(shape)

    def _handle(self, node: ir.Node, index: int) -> None:
        self._handled.add((id(node), index))

    def _laid_out_inputs(self, node: ir.Node) -> list[tuple[int, Layout]]:
        return [(i, self.layouts[v]) for i, v in enumerate(node.inputs) if v in self.layouts]

    def _refuse_inputs(self, node: ir.Node, reason: str) -> None:
        for _, layout in self._laid_out_inputs(node):
            self.refuse(layout, reason)

    def _single_use_param(self, value: ir.Value | None) -> np.ndarray | None:
        arr = constant_initializer(value)
        if arr is None or value is None or len(value.uses()) != 1:
            return None
        return arr

    def _slicer(self, value: ir.Value, axis: int) -> Callable[[np.ndarray], None]:
        def apply(positions: np.ndarray) -> None:
            arr = constant_initializer(value)
            assert arr is not None
            set_initializer(value, np.take(arr, positions, axis=axis))

        return apply

    def _extra_outputs_used(self, node: ir.Node) -> bool:
        return any(o.uses() or o.is_graph_output() for o in node.outputs[1:])

    # -- the walk ------------------------------------------------------------
    def _visit(self, node: ir.Node) -> None:
        op = node.op_type
        if not is_default_domain(node):
            self._refuse_inputs(node, f"consumed by custom op {node.domain}::{op} {node.name!r}")
        elif op in ("Conv", "Gemm", "MatMul"):
            self._visit_linear(node)
        elif op in _UNARY or op in _POOLS:
            self._visit_passthrough(node)
        elif op in _NORMS:
            self._visit_norm(node)
        elif op in _REDUCES:
            self._visit_reduce(node)
        elif op == "Flatten":
            self._visit_flatten(node)
        elif op == "Concat":
            self._visit_concat(node)
        elif op in _BINARY and len(node.inputs) == 2:
            self._visit_binary(node)
        else:
            self._refuse_inputs(node, f"channels consumed by {op} {node.name!r}")

    def _visit_passthrough(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        if laid[0][0] != 0 or len(laid) > 1 or self._extra_outputs_used(node):
            self._refuse_inputs(node, f"unsupported use by {node.op_type} {node.name!r}")
            return
        self.layouts[node.outputs[0]] = laid[0][1]
        self._handle(node, 0)

    def _visit_norm(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        n_params = 4 if node.op_type == "BatchNormalization" else 2
        params = node.inputs[1 : 1 + n_params]
        ok = (
            laid[0][0] == 0
            and len(laid) == 1
            and not self._extra_outputs_used(node)
            and len(params) == n_params
            and all(self._single_use_param(p) is not None for p in params)
        )
        if not ok:
            self._refuse_inputs(
                node, f"{node.op_type} {node.name!r} has shared, non-constant or training params"
            )
            return
        layout = laid[0][1]
        for p in params:
            assert p is not None
            self.edits.append(Edit(layout, self._slicer(p, 0)))
        self.layouts[node.outputs[0]] = layout
        self._handle(node, 0)

    def _visit_reduce(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        rank = self._rank(node.inputs[0])
        axes = attr_ints(node, "axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            arr = constant_initializer(node.inputs[1])
            if arr is None and node.inputs[1].const_value is not None:
                arr = node.inputs[1].const_value.numpy()
            axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
        keepdims = attr_int(node, "keepdims", 1)
        if rank is None or not axes or laid[0][0] != 0 or len(laid) > 1:
            self._refuse_inputs(node, f"{node.op_type} {node.name!r} with unknown axes or rank")
            return
        axes = [a % rank for a in axes]
        if 1 in axes or (not keepdims and 0 in axes):
            self._refuse_inputs(node, f"{node.op_type} {node.name!r} reduces or moves axis 1")
            return
        self.layouts[node.outputs[0]] = laid[0][1]
        self._handle(node, 0)

    def _visit_flatten(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        shape = self._shape(node.inputs[0])
        axis = attr_int(node, "axis", 1)
        if shape is None or axis % max(len(shape), 1) != 1:
            self._refuse_inputs(node, f"Flatten {node.name!r} not on axis 1 (or unknown rank)")
            return
        spatial = [d for d in shape[2:] if d is not None]
        if len(spatial) != len(shape) - 2:
            self._refuse_inputs(node, f"Flatten {node.name!r} has dynamic spatial dims")
            return
        inner = math.prod(spatial)
        layout = laid[0][1]
        self.layouts[node.outputs[0]] = tuple(
            Segment(s.group, s.size, s.inner * inner) for s in layout
        )
        self._handle(node, 0)

    def _visit_concat(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        rank = self._rank(node.outputs[0]) or self._rank(node.inputs[0])
        axis = attr_int(node, "axis", 0)
        if rank is None or axis % rank != 1:
            self._refuse_inputs(node, f"Concat {node.name!r} not on the channel axis")
            return
        segments: list[Segment] = []
        for v in node.inputs:
            if v in self.layouts:
                segments.extend(self.layouts[v])
                continue
            shape = self._shape(v)
            if shape is None or len(shape) < 2 or shape[1] is None:
                self._refuse_inputs(node, f"Concat {node.name!r} has an input of unknown width")
                return
            segments.append(Segment(None, int(shape[1])))
        self.layouts[node.outputs[0]] = tuple(segments)
        for i, _ in laid:
            self._handle(node, i)

    def _visit_binary(self, node: ir.Node) -> None:
        laid = self._laid_out_inputs(node)
        if not laid:
            return
        out_rank = self._rank(node.outputs[0])
        if out_rank is None or out_rank < 2:
            self._refuse_inputs(node, f"{node.op_type} {node.name!r} output of unknown rank")
            return
        if any(self._rank(node.inputs[i]) != out_rank for i, _ in laid):
            self._refuse_inputs(node, f"{node.op_type} {node.name!r} broadcasts a channel tensor")
            return
        width = layout_width(laid[0][1])
        pending: list[Edit] = []
        for v in node.inputs:
            if v in self.layouts or v is None:
                continue
            shape = self._shape(v)
            if shape is None:
                self._refuse_inputs(node, f"{node.op_type} {node.name!r} operand of unknown shape")
                return
            a = 1 - (out_rank - len(shape))
            if a < 0 or shape[a] == 1:
                continue  # broadcasts over the channels: nothing to slice
            if shape[a] == width and self._single_use_param(v) is not None:
                pending.append(Edit(laid[0][1], self._slicer(v, a)))
                continue
            self._refuse_inputs(
                node, f"{node.op_type} {node.name!r} has a per-channel operand it cannot slice"
            )
            return
        layout = laid[0][1]
        for _, other in laid[1:]:
            merged = self._join(layout, other)
            if merged is None:
                self.refuse(layout, f"{node.op_type} {node.name!r} joins misaligned channels")
                self.refuse(other, f"{node.op_type} {node.name!r} joins misaligned channels")
                return
            layout = merged
        self.edits.extend(pending)
        self.layouts[node.outputs[0]] = layout
        for i, _ in laid:
            self._handle(node, i)

    def _join(self, a: Layout, b: Layout) -> Layout | None:
        """Unify two layouts of one elementwise op: their groups must be pruned together."""
        if len(a) != len(b) or any(
            (x.size, x.inner) != (y.size, y.inner) for x, y in zip(a, b, strict=True)
        ):
            return None
        out: list[Segment] = []
        for x, y in zip(a, b, strict=True):
            if x.group is not None and y.group is not None:
                self._union(x.group, y.group)
                out.append(x)
            elif x.group is None and y.group is None:
                out.append(x)
            else:  # one side is prunable, the other fixed: keep both whole
                self.refuse((x, y), "added to channels that cannot be pruned")
                out.append(Segment(None, x.size, x.inner))
        return tuple(out)

    def _visit_linear(self, node: ir.Node) -> None:
        op = node.op_type
        laid = self._laid_out_inputs(node)
        if any(i != 0 for i, _ in laid):
            self._refuse_inputs(node, f"{op} {node.name!r} takes channels as weight or bias")
            return
        w = node.inputs[1] if len(node.inputs) > 1 else None
        w_arr = self._single_use_param(w)
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        group = attr_int(node, "group", 1) if op == "Conv" else 1

        # depthwise Conv: channels pass through, each filter follows its channel
        if op == "Conv" and group > 1:
            layout = laid[0][1] if laid else None
            depthwise = (
                w_arr is not None
                and w_arr.shape[1] == 1
                and w_arr.shape[0] == group
                and (layout is None or layout_width(layout) == group)
                and (bias is None or self._single_use_param(bias) is not None)
            )
            if layout is None:
                return
            if not depthwise:
                self.refuse(layout, f"grouped Conv {node.name!r} (only depthwise is supported)")
                return
            assert w is not None
            self.edits.append(Edit(layout, self._slicer(w, 0)))
            if bias is not None:
                self.edits.append(Edit(layout, self._slicer(bias, 0)))
            self.edits.append(Edit(layout, self._group_setter(node)))
            self.depthwise.append((node, layout))
            self.layouts[node.outputs[0]] = layout
            self._handle(node, 0)
            return

        in_axis = None
        if w_arr is not None:
            if op == "Conv" and w_arr.ndim >= 3:
                in_axis = 1
            elif op == "Gemm" and w_arr.ndim == 2 and attr_int(node, "transA", 0) == 0:
                in_axis = 1 if attr_int(node, "transB", 0) else 0
            elif op == "MatMul" and w_arr.ndim == 2 and self._rank(node.inputs[0]) == 2:
                in_axis = 0
        if laid:
            if in_axis is None:
                self._refuse_inputs(node, f"{op} {node.name!r} has a shared or non-constant weight")
            else:
                assert w is not None
                self.edits.append(Edit(laid[0][1], self._slicer(w, in_axis)))
                self.consumers.append((node, laid[0][1]))
                self._handle(node, 0)
        if in_axis is None or w_arr is None or w is None:
            return
        out_axis = {"Conv": 0, "Gemm": 1 - in_axis, "MatMul": 1}[op]
        channels = int(w_arr.shape[out_axis])
        bias_axis: int | None = None
        if op != "MatMul" and bias is not None:
            b_arr = self._single_use_param(bias)
            if b_arr is None:
                return  # a shared or computed bias: this layer is not a source
            if b_arr.ndim >= 1 and b_arr.shape[-1] == channels and b_arr.size == channels:
                bias_axis = b_arr.ndim - 1
            elif b_arr.size != 1 and (b_arr.ndim == 0 or b_arr.shape[-1] != 1):
                return
        rank = self._rank(node.outputs[0])
        if op != "Conv" and rank != 2:
            return
        g = self._new_group(channels)
        self._sources[g].append(Source(node, w, out_axis, bias, bias_axis))
        self.layouts[node.outputs[0]] = (Segment(g, channels),)

    def _group_setter(self, node: ir.Node) -> Callable[[np.ndarray], None]:
        def apply(positions: np.ndarray) -> None:
            node.attributes["group"] = ir.AttrInt64("group", len(positions))

        return apply

    def _check_uses(self) -> None:
        for value, layout in self.layouts.items():
            if value.is_graph_output():
                self.refuse(layout, f"{value.name!r} is a graph output")
            for use in value.uses():
                if (id(use.node), use.idx) not in self._handled:
                    where = "a subgraph" if use.node.graph is not self.graph else "an unhandled use"
                    self.refuse(layout, f"{value.name!r} is used by {use.node.op_type} in {where}")
