"""Which nodes compute in float16 and which stay float32, and why.

`static_plan` applies the rules that need no data, in this order (the first that
applies is the reason reported):

1. not a float32 node (no float32 tensor), a Constant (a constant, converted where
   its readers need it) or Shape/Size (they read no values): not planned, untouched;
2. ``subgraph``: it holds a subgraph (If/Loop/Scan): the node and its bodies stay
   float32 (refused, not converted);
3. ``custom_domain``: not a default-domain ONNX op (its float16 support is unknown);
4. ``excluded``: named in `Fp16Options.exclude`;
5. ``op_type``: its op type is in `Fp16Options.keep_op_types`;
6. ``non_float_result``: it reads float32 and all its results are integer, bool or
   double (a Cast to int, a comparison, ArgMax; not IsNaN/IsInf, exact in float16):
   computed from float32 values;
7. ``no_float16_form``: its schema admits no float16 for its float32 tensors (Range),
   or its types are unknown (`ops.float16_form`);
8. ``feeds_integer``: every reader of its float32 results is kept by rule 6 or by this
   rule (shape arithmetic done in float): float16 could change the integers;
9. ``norm_statistics``: with `keep_norm_statistics`, the statistics of a decomposed
   normalization: after a kept reduction (or Pow), the Add (epsilon), Sqrt,
   Reciprocal, Max/Clip and Mul/Div by constants on the way, and the Div/Mul that
   applies 1/std (``(x - mean) / sqrt(var + eps)``); the ``x - mean`` is not kept.

`decide` then applies the measurements (`passes.precision.measure`):

10. ``no_kernel``: onnxruntime could not run its float16 form (not measurable);
11. ``range``: a float input or output reaches a finite magnitude above `max_abs`;
12. ``error``: its float16 error exceeds `max_relative_error`;
13. ``input_precision``: it feeds a node kept by rule 12 whose error stays above the
    bound even in float32 with float16-rounded inputs (so the rounding of its inputs,
    not its own arithmetic, is the problem): its producers of those inputs (through
    value-moving ops) stay float32 too, one level up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import onnx_ir as ir

from passes import graph_tools
from passes.precision.ops import (
    EXACT_OPS,
    FLOAT,
    NEUTRAL_OPS,
    Slots,
    Types,
    float16_form,
    has_subgraph,
    reads_float32,
)
from passes.precision.options import Fp16Options

__all__ = ["KeptNode", "Measured", "Plan", "decide", "display_name", "static_plan"]


@dataclasses.dataclass(frozen=True)
class KeptNode:
    """A node kept in float32: its name (`display_name`), op type, reason code and a
    one-line detail."""

    name: str
    op_type: str
    reason: str
    detail: str


@dataclasses.dataclass
class Plan:
    """Every planned node of the main graph: float16 (with its form) or kept float32."""

    fp16: dict[ir.Node, Slots]
    kept: dict[ir.Node, KeptNode]

    def keep(self, node: ir.Node, reason: str, detail: str) -> None:
        self.fp16.pop(node, None)
        if node not in self.kept:
            self.kept[node] = KeptNode(display_name(node), node.op_type, reason, detail)


def display_name(node: ir.Node) -> str:
    """The node's name, or for an unnamed node the name of its first output."""
    if node.name:
        return node.name
    return f"({node.outputs[0].name})" if node.outputs and node.outputs[0].name else ""


@dataclasses.dataclass
class Measured:
    """What the calibration run found: largest finite |x| per float32 value, each
    measured node's relative float16 error (its float16 form) and rounded-input error
    (float32 arithmetic on float16-rounded inputs), and nodes onnxruntime could not run
    in float16 (with its message)."""

    value_max: dict[ir.Value, float]
    error: dict[ir.Node, float]
    rounded_error: dict[ir.Node, float]
    no_kernel: dict[ir.Node, str]
    samples: int


def static_plan(model: ir.Model, types: Types, options: Fp16Options) -> Plan:
    """Rules 1-9 (module docstring)."""
    plan = Plan({}, {})
    opset = graph_tools.opset(model)
    keep_ops = set(options.keep_op_types)
    excluded = set(options.exclude)
    for node in model.graph:
        if not reads_float32(node, types) or graph_tools.is_std(node, "Constant", *NEUTRAL_OPS):
            continue
        reason = _static_reason(node, types, keep_ops, excluded)
        if reason is not None:
            plan.keep(node, *reason)
            continue
        form = float16_form(node, types, opset)
        if isinstance(form, str):
            plan.keep(node, "no_float16_form", form)
        else:
            plan.fp16[node] = form
    _keep_integer_feeders(model, plan, types)
    if options.keep_norm_statistics:
        for node in list(plan.kept):
            if plan.kept[node].reason == "op_type" and node.op_type.startswith("Reduce"):
                _keep_statistics(node, plan)
    return plan


#: Tests whose result float16 cannot change (NaN stays NaN; a float32 value that float16
#: would turn into inf is caught by the range rule).
_EXACT_TESTS = frozenset({"IsNaN", "IsInf"})


def _static_reason(
    node: ir.Node, types: Types, keep_ops: set[str], excluded: set[str]
) -> tuple[str, str] | None:
    if has_subgraph(node):
        return "subgraph", "holds a subgraph (If/Loop/Scan): it and its bodies stay float32"
    if not graph_tools.is_default_domain(node):
        return "custom_domain", f"op of domain {node.domain!r}: float16 support unknown"
    if node.name in excluded:
        return "excluded", "named in exclude"
    if node.op_type in keep_ops:
        return "op_type", f"{node.op_type} is kept float32 (keep_op_types)"
    outputs = [types.get(v) for v in node.outputs if v.name or v.uses()]
    if outputs and all(t != FLOAT for t in outputs) and node.op_type not in _EXACT_TESTS:
        kinds = ", ".join(sorted({str(t.name).lower() for t in outputs if t is not None}))
        return "non_float_result", f"its result ({kinds}) is computed from float32 values"
    return None


def _keep_integer_feeders(model: ir.Model, plan: Plan, types: Types) -> None:
    """Rule 8, readers first (reverse graph order)."""
    integer = {"non_float_result", "feeds_integer"}
    for node in reversed(list(model.graph)):
        if node not in plan.fp16:
            continue
        floats = [v for v in node.outputs if types.get(v) == FLOAT]
        if not floats or any(v.is_graph_output() or not v.uses() for v in floats):
            continue
        readers = [use.node for v in floats for use in v.uses()]
        if any(r.graph is not model.graph for r in readers):
            continue
        decisive = [r for r in readers if not graph_tools.is_std(r, *NEUTRAL_OPS)]
        if decisive and all(r in plan.kept and plan.kept[r].reason in integer for r in decisive):
            plan.keep(node, "feeds_integer", "its float32 results only feed integer results")


def _keep_statistics(reduction: ir.Node, plan: Plan) -> None:
    """Rule 9: walk forward from a kept reduction through the statistic's arithmetic."""
    detail = f"statistics of a decomposed normalization (after {display_name(reduction)})"
    stack: list[tuple[ir.Node, bool]] = [(reduction, False)]
    seen: set[ir.Node] = set()
    while stack:
        node, rooted = stack.pop()
        for use in (u for out in node.outputs for u in out.uses()):
            reader = use.node
            if reader in seen:
                continue
            seen.add(reader)
            if reader in plan.kept and reader.op_type == "Pow":
                stack.append((reader, True))  # Pow(var, 0.5) is a square root
                continue
            if reader not in plan.fp16:
                continue
            others_constant = all(
                graph_tools.constant(v) is not None
                for i, v in enumerate(reader.inputs)
                if i != use.idx and v is not None
            )
            if reader.op_type in ("Sqrt", "Reciprocal"):
                plan.keep(reader, "norm_statistics", detail)
                stack.append((reader, True))
            elif reader.op_type in ("Add", "Max", "Clip", "Mul", "Div") and others_constant:
                plan.keep(reader, "norm_statistics", detail)
                stack.append((reader, rooted or (reader.op_type == "Div" and use.idx == 1)))
            elif reader.op_type in ("Div", "Mul") and rooted:
                plan.keep(reader, "norm_statistics", detail)


def decide(plan: Plan, measured: Measured, options: Fp16Options) -> None:
    """Rules 10-13 (module docstring), in place."""
    for node, message in measured.no_kernel.items():
        plan.keep(node, "no_kernel", f"onnxruntime cannot run its float16 form: {message}")
    for node in list(plan.fp16):
        peak = max((measured.value_max.get(v, 0.0) for v in _float_values(node)), default=0.0)
        if peak > options.max_abs:
            plan.keep(node, "range", f"|x| reaches {peak:.4g} > max_abs {options.max_abs:g}")
    bound = options.max_relative_error
    for node in list(plan.fp16):
        error = measured.error.get(node, 0.0)
        if error <= bound:
            continue
        plan.keep(node, "error", f"float16 error {error:.3g} > {bound:g}")
        rounded = measured.rounded_error.get(node, 0.0)
        if rounded > bound:
            for producer in _producers(node):
                if producer not in plan.fp16:
                    continue
                plan.keep(
                    producer,
                    "input_precision",
                    f"feeds {display_name(node)}, which errs {rounded:.3g} even in float32 on "
                    "float16-rounded inputs",
                )


def _float_values(node: ir.Node) -> Iterable[ir.Value]:
    return (v for v in (*node.inputs, *node.outputs) if v is not None)


def _producers(node: ir.Node) -> list[ir.Node]:
    """The producers of `node`'s inputs, through value-moving ops (kept too), one level."""
    found: list[ir.Node] = []
    stack = [v.producer() for v in node.inputs if v is not None]
    while stack:
        producer = stack.pop()
        if producer is None or producer in found or producer.graph is not node.graph:
            continue
        found.append(producer)
        if producer.op_type in EXACT_OPS:
            stack.extend(v.producer() for v in producer.inputs if v is not None)
    return found
