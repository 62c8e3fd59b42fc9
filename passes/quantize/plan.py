"""Where Q/DQ goes: a `QuantSpec` applied to one graph, before any data is seen.

`plan_quantization(graph, spec, exclude)` decides, from the spec's op lists alone,

- which activation tensors get one QuantizeLinear → DequantizeLinear pair and which
  consumer inputs read its DequantizeLinear (the calibrator needs ranges for exactly
  these tensors);
- which constant weights become int8 initializers (with their per-channel axis) and
  which biases become int32;
- which tensors share their range with another (`share`): the output of a layout
  op (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze) whose input is
  quantized takes the input's scale and zero point, so the DQ → op → Q around it
  cancels (onnxruntime then runs the op on uint8).

Rules, for nodes not in `exclude` (nor in the stem, when spec.float_stem):

1. A weighted op (spec.weighted_ops) with a constant float weight quantizes the
   weight (Conv/ConvTranspose input 1, Gemm input B, MatMul the constant side),
   and its float activation inputs.
2. An op in spec.input_ops has all its non-constant float inputs quantized; Add
   follows spec.residual_add ("all" inputs, or only the "residual" one: the input
   that no weighted op produces, else the older one in graph order). With
   spec.float_skip, an Add in a chain of Adds (its output read by another Add,
   or an input written by one) computes in float instead: it reads a DQ only
   where the producer quantizes its output, and the stream it writes is
   quantized only for the readers that want it — the next Add reads it float.
3. An op in spec.output_ops has its output quantized — after the Relu/Clip chain
   that follows it when those are in spec.fused_activations and the op's output
   has no other use. The activation's interval bounds the range (a Clip(0, 6)
   range never exceeds [0, 6], so onnxruntime can drop the Clip).
4. Graph outputs are never quantized (their consumers inside the graph may still
   read a DQ of them); nor are tensors that are not float.
5. A tensor that reaches a graph output only through ops that move values without
   changing them (`RANGE_PRESERVING_OPS`: a detection head's Reshape → Transpose →
   Concat) is an output in all but name: its range must cover everything calibration
   saw (`QuantPlan.covering`), because a value clipped there is a wrong output value,
   not noise a later layer averages away. A box coordinate of 480 clipped at a 99.99th
   percentile of 316 is a box a third too small.

Excluded nodes ("kept in float") compute in float; their weights are still
stored as int8 behind a DequantizeLinear unless `excluded_weights=False` (an
FP32 copy of a layer would break the size budget; int8 weights cost little
accuracy, the activations are what hurt). They always read the float tensor, even where a
neighbour quantizes it: a float Conv fed by a DequantizeLinear would otherwise be
re-quantized by onnxruntime itself (its weight/bias quantization transformer
turns "DQ → Conv with float weight" into a per-tensor int8 Conv), which is
exactly what a fallback must avoid. Tensors that only excluded nodes read
are not quantized.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx_ir as ir

from passes import graph_tools
from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

PASSTHROUGH_OPS = frozenset({"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})

#: Ops whose output values are (a selection of) their data input's values, unchanged
#: or, for Relu/Clip, clipped in the same direction: a clipped input is a clipped
#: output. Concat passes every input through; the others their first.
RANGE_PRESERVING_OPS = frozenset(
    {
        *PASSTHROUGH_OPS,
        "Concat",
        "Identity",
        "Slice",
        "Split",
        "Gather",
        "GatherElements",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "Relu",
        "Clip",
    }
)


@dataclass
class ActivationSite:
    """One activation tensor to quantize and the (node, input index) edges that read its DQ."""

    value: ir.Value
    edges: list[tuple[ir.Node, int]] = field(default_factory=list)
    bounds: tuple[float, float] = (-float("inf"), float("inf"))
    from_producer: bool = False  # the producer runs in int8: every non-excluded reader takes the DQ


@dataclass(frozen=True)
class WeightSite:
    node: ir.Node
    index: int
    axis: int | None  # None: per tensor


@dataclass(frozen=True)
class BiasSite:
    node: ir.Node
    index: int
    activation: ir.Value  # the input whose scale multiplies the weight's
    weight_index: int


@dataclass
class QuantPlan:
    activations: dict[str, ActivationSite]
    weights: list[WeightSite]
    biases: list[BiasSite]
    share: dict[str, str]  # value name -> value name whose range it takes
    nodes: list[str]  # names of the nodes that run quantized (weighted or in/out ops)
    exclude: frozenset[str] = frozenset()  # nodes kept in float: they always read float inputs
    covering: frozenset[str] = frozenset()  # rule 5: ranges that must cover min and max

    @property
    def calibrated(self) -> list[str]:
        """Names of the tensors a calibrator must measure (all of them: a shared tensor
        uses its own range when a fallback leaves its source in float)."""
        return list(self.activations)


def _weight_index(node: ir.Node) -> int | None:
    """Index of the constant weight of a weighted op, or None."""
    if graph_tools.is_std(node, "Conv", "ConvTranspose", "Gemm"):
        idx = 1
    elif graph_tools.is_std(node, "MatMul"):
        idx = 1 if graph_tools.constant(node.inputs[1]) is not None else 0
    else:
        return None
    if len(node.inputs) <= idx or node.inputs[idx] is None:
        return None
    value = node.inputs[idx]
    if not graph_tools.is_float(value) or graph_tools.constant(value) is None:
        return None
    return idx


def _weight_axis(spec: QuantSpec, node: ir.Node, index: int, rank: int) -> int | None:
    if not spec.weight_per_channel or rank < 2:
        return None
    if graph_tools.is_std(node, "MatMul"):
        return rank - 1 if index == 1 else None  # a constant left operand has no output channel
    if graph_tools.is_std(node, "Gemm"):
        trans_b = bool(graph_tools.attr_int(node, "transB", 0))
        return spec.weight_axis("Gemm", trans_b=trans_b)
    return spec.weight_axis(node.op_type)


def _gemm_bias_ok(node: ir.Node) -> bool:
    return (
        graph_tools.attr_float(node, "alpha", 1.0) == 1.0
        and graph_tools.attr_float(node, "beta", 1.0) == 1.0
        and not graph_tools.attr_int(node, "transA", 0)
    )


def plan_quantization(
    graph: ir.Graph,
    spec: QuantSpec,
    exclude: frozenset[str] | set[str] = frozenset(),
    *,
    excluded_weights: bool = True,
) -> QuantPlan:
    """Apply `spec` to `graph` (see the module docstring for the rules). Values need
    their element types (run `graph_tools.ensure_types` first): untyped ones are left float.

    With `excluded_weights`, the constant weights of excluded weighted ops are still
    stored as int8 (weight-only: DQ → float op), so a fallback keeps the artifact small.
    """
    if spec.float_stem:
        exclude = frozenset(exclude) | frozenset(stem_nodes(graph, spec))
    planner = _Planner(graph, spec, frozenset(exclude), excluded_weights)
    for node in graph:
        planner.visit(node)
    return planner.finish()


class _Planner:
    """The rules of the module docstring, applied node by node in graph order."""

    def __init__(
        self, graph: ir.Graph, spec: QuantSpec, exclude: frozenset[str], excluded_weights: bool
    ) -> None:
        self.graph = graph
        self.spec = spec
        self.exclude = exclude
        self.excluded_weights = excluded_weights
        self.order = {id(n): i for i, n in enumerate(graph)}
        self.acts: dict[str, ActivationSite] = {}
        self.weights: list[WeightSite] = []
        self.biases: list[BiasSite] = []
        self.quantized: list[str] = []

    def want(
        self,
        value: ir.Value | None,
        node: ir.Node | None,
        idx: int | None,
        bounds: tuple[float, float] | None = None,
    ) -> bool:
        """Quantize `value` (read by `node`'s input `idx`, when given); False if it cannot be."""
        if (
            value is None
            or not graph_tools.is_float(value)
            or graph_tools.constant(value) is not None
        ):
            return False
        site = self.acts.get(value.name or "")
        if site is None:
            if not value.name:
                return False
            site = self.acts[value.name] = ActivationSite(value)
            producer = value.producer()
            if producer is not None:
                b = graph_tools.activation_bounds(producer)
                if b is not None:
                    site.bounds = b
        if node is not None and idx is not None and (node, idx) not in site.edges:
            site.edges.append((node, idx))
        if bounds is not None:
            site.bounds = (max(site.bounds[0], bounds[0]), min(site.bounds[1], bounds[1]))
        return True

    def visit(self, node: ir.Node) -> None:
        if node.domain not in ("", "ai.onnx"):
            return
        if node.name in self.exclude:
            self._excluded(node)
            return
        spec, op = self.spec, node.op_type
        runs_quantized = False
        if op in spec.weighted_ops:
            weighted = self._weighted(node)
            if weighted is None:
                return
            runs_quantized = weighted
        elif op == "Add" and spec.float_skip and _chained_add(node):
            pass  # adds in float: rule 2
        elif op == "Add" and spec.residual_add != "none":
            runs_quantized = self._add(node)
        elif op in spec.input_ops:
            ins = [
                (i, v)
                for i, v in enumerate(node.inputs)
                if v is not None and graph_tools.is_float(v)
            ]
            if ins and all(graph_tools.constant(v) is None for _, v in ins):
                runs_quantized = all([self.want(v, node, i) for i, v in ins])
        if op in spec.output_ops and runs_quantized:
            out, bounds = _fused_output(node, spec)
            if out is not None and not out.is_graph_output():
                self.want(out, None, None, bounds)
                self.acts[out.name or ""].from_producer = True
        if runs_quantized and node.name:
            self.quantized.append(node.name)

    def _excluded(self, node: ir.Node) -> None:
        """A node kept in float: only its weight may still be stored as int8."""
        if self.excluded_weights and node.op_type in self.spec.weighted_ops:
            w_idx = _weight_index(node)
            if w_idx is not None:
                w_arr = graph_tools.constant(node.inputs[w_idx])
                assert w_arr is not None
                self.weights.append(
                    WeightSite(node, w_idx, _weight_axis(self.spec, node, w_idx, w_arr.ndim))
                )

    def _weighted(self, node: ir.Node) -> bool | None:
        """Rule 1: whether the weighted op runs quantized (None: its weight is not a
        constant float, so the node is left alone)."""
        spec, op = self.spec, node.op_type
        w_idx = _weight_index(node)
        if w_idx is None and (op != "MatMul" or not spec.activation_matmul):
            logger.debug("not quantizing %s: its weight is not a constant float", node.name)
            return None
        ok = True
        for i, v in enumerate(node.inputs[:2]):
            if i != w_idx and not self.want(v, node, i):
                ok = False
        if w_idx is None:
            return ok
        w_arr = graph_tools.constant(node.inputs[w_idx])
        assert w_arr is not None
        self.weights.append(WeightSite(node, w_idx, _weight_axis(spec, node, w_idx, w_arr.ndim)))
        x = node.inputs[1 - w_idx] if op == "MatMul" else node.inputs[0]
        has_bias = op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2
        if (
            spec.bias_int32
            and has_bias
            and ok
            and x is not None
            and graph_tools.constant(node.inputs[2]) is not None
            and (op != "Gemm" or _gemm_bias_ok(node))
            and (op != "ConvTranspose" or graph_tools.attr_int(node, "group", 1) == 1)
        ):
            bias = graph_tools.constant(node.inputs[2])
            if bias is not None and bias.ndim == 1:
                self.biases.append(BiasSite(node, 2, x, w_idx))
        return ok

    def _add(self, node: ir.Node) -> bool:
        """Rule 2 for an Add of two computed tensors: all inputs, or the residual one."""
        inputs = [v for v in node.inputs if v is not None]
        if len(inputs) != 2 or not all(
            graph_tools.is_float(v) and graph_tools.constant(v) is None for v in inputs
        ):
            return False
        if self.spec.residual_add == "all":
            return all(self.want(v, node, i) for i, v in enumerate(node.inputs))
        r = _residual_index(node, self.spec, self.order)
        self.want(node.inputs[r], node, r)
        return False

    def finish(self) -> QuantPlan:
        """Rule 4 and the edges: producer-quantized tensors feed every reader except
        excluded ones (graph outputs only the listed edges); unread sites are dropped."""
        acts = self.acts
        for site in acts.values():
            if site.from_producer and not site.value.is_graph_output():
                for use in site.value.uses():
                    if use.node.name not in self.exclude and (use.node, use.idx) not in site.edges:
                        site.edges.append((use.node, use.idx))
        for name in [n for n, s in acts.items() if not s.edges]:
            del acts[name]
        share = _shared_ranges(acts)
        covering = frozenset(feeding_outputs(self.graph)) & frozenset(acts)
        return QuantPlan(
            acts, self.weights, self.biases, share, self.quantized, self.exclude, covering
        )


def feeding_outputs(graph: ir.Graph) -> set[str]:
    """Names of the tensors whose values reach a graph output unchanged: the outputs
    themselves and, walking back through `RANGE_PRESERVING_OPS`, their data inputs."""
    out: set[str] = set()
    todo = [v for v in graph.outputs if v is not None]
    while todo:
        value = todo.pop()
        if not value.name or value.name in out:
            continue
        out.add(value.name)
        producer = value.producer()
        if producer is None or not graph_tools.is_std(producer, *RANGE_PRESERVING_OPS):
            continue
        data = producer.inputs if producer.op_type == "Concat" else producer.inputs[:1]
        todo.extend(v for v in data if v is not None and graph_tools.constant(v) is None)
    return out


def _chained_add(node: ir.Node) -> bool:
    """Whether an Add reads another Add's output or writes one that an Add reads."""
    for v in node.inputs:
        producer = v.producer() if v is not None else None
        if producer is not None and graph_tools.is_std(producer, "Add"):
            return True
    return any(graph_tools.is_std(u.node, "Add") for out in node.outputs for u in out.uses())


def _residual_index(node: ir.Node, spec: QuantSpec, order: dict[int, int]) -> int:
    """The skip-connection input of an Add: not produced by a weighted op, else the older one."""
    producers = [v.producer() if v is not None else None for v in node.inputs[:2]]
    weighted = [p is not None and p.op_type in spec.weighted_ops for p in producers]
    if weighted[0] != weighted[1]:
        return 0 if not weighted[0] else 1
    pos = [order.get(id(p), -1) if p is not None else -1 for p in producers]
    return 0 if pos[0] <= pos[1] else 1


def _fused_output(
    node: ir.Node, spec: QuantSpec
) -> tuple[ir.Value | None, tuple[float, float] | None]:
    """The tensor that carries `node`'s result after fused activations, and their interval."""
    out = node.outputs[0] if node.outputs else None
    bounds: tuple[float, float] | None = None
    while out is not None and not out.is_graph_output():
        uses = list(out.uses())
        if len(uses) != 1:
            break
        user = uses[0].node
        if user.op_type not in spec.fused_activations or uses[0].idx != 0:
            break
        b = graph_tools.activation_bounds(user)
        if b is None:
            break
        bounds = b if bounds is None else (max(bounds[0], b[0]), min(bounds[1], b[1]))
        out = user.outputs[0]
    return out, bounds


def _shared_ranges(acts: dict[str, ActivationSite]) -> dict[str, str]:
    share: dict[str, str] = {}
    for name, site in acts.items():
        producer = site.value.producer()
        if (
            producer is None
            or not graph_tools.is_std(producer, *PASSTHROUGH_OPS)
            or not producer.inputs
        ):
            continue
        src = producer.inputs[0]
        if src is not None and src.name in acts:
            root = src.name
            while root in share:
                root = share[root]
            share[name] = root
    return share


def stem_nodes(graph: ir.Graph, spec: QuantSpec | None = None) -> list[str]:
    """The network's stem: each Conv that reads a graph input directly (through at most
    a Relu/Clip), and the depthwise Convs that follow it through a single Relu/Clip;
    with a `spec` that keeps no stem float before a MaxPool
    (`float_stem_into_max_pool`), not a stem whose output a MaxPool reads.

    Keeping the stem in float buys much accuracy on image models: the
    first Conv has few input channels (little compute for int8 to save) and writes
    the largest feature map, whose quantization error every later layer sees; a
    depthwise Conv on that map is as cheap. On MobileNetV2 (first Conv + first
    depthwise Conv) it raised output SQNR by 1 dB; its latency cost was 10-20% of
    the INT8 time in block-timed development runs (it read 2.6% when sessions
    were still timed call by call).
    """
    out: list[str] = []
    inputs = {id(v) for v in graph.inputs}
    pools_allowed = spec is None or spec.float_stem_into_max_pool
    for node in graph:
        if not graph_tools.is_std(node, "Conv") or not node.inputs or node.inputs[0] is None:
            continue
        if id(node.inputs[0]) not in inputs or not node.name:
            continue
        stem = _stem_from(node)
        if pools_allowed or not _feeds_max_pool(stem[-1]):
            out.extend(n.name or "" for n in stem)
    return out


def _stem_from(node: ir.Node) -> list[ir.Node]:
    """A stem Conv and the depthwise Convs after it (see `stem_nodes`)."""
    out = [node]
    current = node
    while True:
        value = current.outputs[0]
        uses = list(value.uses())
        if len(uses) != 1 or not graph_tools.is_std(uses[0].node, "Relu", "Clip"):
            break
        act_uses = list(uses[0].node.outputs[0].uses())
        if len(act_uses) != 1:
            break
        nxt = act_uses[0].node
        w = (
            graph_tools.constant(nxt.inputs[1])
            if graph_tools.is_std(nxt, "Conv") and len(nxt.inputs) > 1
            else None
        )
        group = graph_tools.attr_int(nxt, "group", 1) if w is not None else 1
        if w is None or group <= 1 or w.shape[1] != 1 or not nxt.name:
            break
        out.append(nxt)
        current = nxt
    return out


def _feeds_max_pool(node: ir.Node) -> bool:
    """Whether a MaxPool reads `node`'s output, directly or after its Relu/Clip chain:
    onnxruntime then pools in float NCHW after a float stem (ResNet-18 at 64x64: the
    MaxPool took 339-461 us a call, against 22 us in uint8 NHWC after an int8 stem)."""
    value = node.outputs[0]
    while True:
        uses = list(value.uses())
        if any(graph_tools.is_std(u.node, "MaxPool") for u in uses):
            return True
        if len(uses) != 1 or not graph_tools.is_std(uses[0].node, "Relu", "Clip"):
            return False
        value = uses[0].node.outputs[0]
