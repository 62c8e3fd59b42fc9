"""Insert QuantizeLinear/DequantizeLinear as a `QuantSpec` and calibrated ranges say.

Rewrite, for the plan of `plan.plan_quantization` (which tensors, weights, biases):

- activation tensor x with range [lo, hi] → ``DQ(Q(x, s, zp), s, zp)``; the planned
  consumer inputs (all of them when the producer runs in int8) read the DQ. The
  range is first clamped to the interval of the Relu/Clip that produced x.
- constant weight W (float) → a new int8 initializer Wq and ``DQ(Wq, s_w, 0, axis)``,
  per output channel; the float W is dropped once nothing reads it, so the file
  really shrinks to about a quarter (for a layer that computes in float, onnxruntime's
  flavour writes ``Mul(Cast(Wq), s_w)`` instead, which it folds at load: `fold.py`). Rounding is to nearest unless `weights`
  supplies the rounded values and scales a data-aware rounding chose (`rounding`).
- bias b of a quantized Conv/Gemm (when the spec wants int32 biases) →
  int32 ``round(b / (s_x * s_w))`` and ``DQ(bq, s_x * s_w, 0, axis=0)``.

The model stays an ordinary float ONNX graph ("QDQ form"): onnxruntime fuses the
DQ → op → Q groups into integer kernels, TensorRT builds int8 layers from them.

Refuses (raises ValueError): a model already holding Q/DQ nodes is left alone
(`modified=False`, so the pass is idempotent); a planned tensor without a range;
an opset below 13 (no per-axis Q/DQ).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.fold import fold_float_weights, int8_weight
from passes.quantize.params import activation_qparams, quantize_bias, quantize_weight
from passes.quantize.plan import ActivationSite, BiasSite, QuantPlan, WeightSite, plan_quantization
from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def is_quantized(model: ir.Model) -> bool:
    return any(graph_tools.is_std(n, *QDQ_OPS) for n in model.graph)


class InsertQdqPass(ir.passes.InPlacePass):
    """Insert Q/DQ pairs for activations and int8 (int32) initializers for weights (biases).

    `excluded_weights=False` leaves the weights of excluded nodes float too (the
    sensitivity analysis measures one layer against an otherwise exact FP32 model).
    """

    def __init__(
        self,
        spec: QuantSpec,
        ranges: Mapping[str, tuple[float, float]],
        *,
        exclude: frozenset[str] | set[str] = frozenset(),
        weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        excluded_weights: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.excluded_weights = excluded_weights
        self.ranges = dict(ranges)
        self.exclude = frozenset(exclude)
        self.weights = dict(weights or {})

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if is_quantized(model):
            logger.info(
                "model already holds QuantizeLinear/DequantizeLinear nodes; not quantizing again"
            )
            return ir.passes.PassResult(model, modified=False)
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        if opset < 13:
            raise ValueError(
                f"INT8 Q/DQ needs opset 13 or newer, the model has opset {opset}; upgrade it first"
            )
        graph_tools.ensure_types(model)
        plan = plan_quantization(
            graph, self.spec, self.exclude, excluded_weights=self.excluded_weights
        )
        missing = [n for n in plan.activations if n not in plan.share and n not in self.ranges]
        if missing:
            raise ValueError(f"no calibrated range for {len(missing)} tensors, e.g. {missing[0]!r}")
        if not plan.activations and not plan.weights:
            return ir.passes.PassResult(model, modified=False)
        _Inserter(graph, self.spec, self.ranges, plan, self.weights).run()
        return ir.passes.PassResult(model, modified=True)


def activation_params(
    plan: QuantPlan, spec: QuantSpec, ranges: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[np.float32, np.integer]]:
    """(scale, zero point) of every planned activation, with shared and clamped ranges."""
    out = {}
    for name, site in plan.activations.items():
        if name in plan.share:
            continue
        lo, hi = ranges[name]
        lo, hi = max(lo, site.bounds[0]), min(hi, site.bounds[1])
        out[name] = activation_qparams(lo, hi, spec)
    for name, root in plan.share.items():  # a layout op's output: exactly its input's parameters
        out[name] = out[root]
    return out


class _Inserter:
    def __init__(
        self,
        graph: ir.Graph,
        spec: QuantSpec,
        ranges: Mapping[str, tuple[float, float]],
        plan: QuantPlan,
        weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ):
        self.graph, self.spec, self.plan, self.rounded = graph, spec, plan, weights
        self.params = activation_params(plan, spec, ranges)
        self.taken = graph_tools.value_names(graph)
        self.taken.update(n.name for n in graph if n.name)
        self.dq_of: dict[str, ir.Value] = {}
        self._quantized: dict[tuple[str, int | None], tuple[np.ndarray, np.ndarray]] = {}

    def _init(self, base: str, array: np.ndarray) -> ir.Value:
        return graph_tools.new_initializer(self.graph, base, array, taken=self.taken)

    def _node(
        self,
        op: str,
        inputs: list[ir.Value],
        base: str,
        out_type: ir.DataType,
        shape: ir.Shape | None,
        axis: int | None = None,
    ) -> ir.Node:
        name = graph_tools.unique_name(self.graph, f"{base}_{op}", self.taken)
        out = ir.Value(
            name=graph_tools.unique_name(
                self.graph, f"{base}_{'q' if op == 'QuantizeLinear' else 'dq'}", self.taken
            )
        )
        out.type = ir.TensorType(out_type)
        if shape is not None:
            out.shape = shape
        attrs = {} if axis is None else {"axis": axis}
        return ir.node(op, inputs, attrs, outputs=[out], name=name)

    def run(self) -> None:
        for name, site in self.plan.activations.items():
            self._activation(name, site)
        for b in self.plan.biases:  # before the weights: reads the float weight's scale
            self._bias(b)
        for w in self.plan.weights:
            self._weight(w)
        if self.spec.fold_float_weights:
            fold_float_weights(self.graph)

    def _activation(self, name: str, site: ActivationSite) -> None:
        value = site.value
        scale, zp = self.params[name]
        s = self._init(f"{name}_scale", np.asarray(scale, dtype=np.float32))
        z = self._init(f"{name}_zero_point", np.asarray(zp))
        q_type = ir.DataType.UINT8 if self.spec.activation_dtype == "uint8" else ir.DataType.INT8
        q = self._node("QuantizeLinear", [value, s, z], name, q_type, value.shape)
        dq = self._node(
            "DequantizeLinear",
            [q.outputs[0], s, z],
            name,
            value.dtype or ir.DataType.FLOAT,
            value.shape,
        )
        producer = value.producer()
        if producer is not None:
            self.graph.insert_after(producer, [q, dq])
        else:
            self.graph.insert_before(self.graph[0], [q, dq])
        for node, idx in site.edges:
            node.replace_input_with(idx, dq.outputs[0])
        self.dq_of[name] = dq.outputs[0]

    def _weight(self, site: WeightSite) -> None:
        node = site.node
        value = node.inputs[site.index]
        arr = graph_tools.constant(value)
        if value is None or arr is None:
            return
        key = f"{value.name}|{site.axis}"
        if key not in self.dq_of:
            q, scale = self._quantize_weight(value, arr, site.axis)
            base = value.name or "weight"
            self.dq_of[key] = self._stored(base, base, q, scale, value, site.axis, node)
        node.replace_input_with(site.index, self.dq_of[key])
        drop_if_unused(self.graph, value)

    def _stored(
        self,
        base: str,
        params_base: str,
        q: np.ndarray,
        scale: np.ndarray,
        like: ir.Value,
        axis: int | None,
        before: ir.Node,
    ) -> ir.Value:
        """`q` as an integer initializer behind ``DequantizeLinear(q, scale, 0, axis)``
        (zero point of q's type), inserted before `before`; returns the float value."""
        qv = self._init(f"{base}_quantized", q)
        sv = self._init(f"{params_base}_scale", scale)
        zv = self._init(f"{params_base}_zero_point", np.zeros(scale.shape, q.dtype))
        dq = self._node(
            "DequantizeLinear",
            [qv, sv, zv],
            base,
            like.dtype or ir.DataType.FLOAT,
            like.shape,
            axis,
        )
        self.graph.insert_before(before, [dq])
        return dq.outputs[0]

    def _quantize_weight(
        self, value: ir.Value | None, arr: np.ndarray, axis: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Round to nearest, or the integers a data-aware rounding chose (`weights`);
        once per weight and axis (a layer's bias needs its weight's scale too)."""
        name = value.name if value is not None else None
        key = None if name is None else (name, axis)
        if key is not None and key in self._quantized:
            return self._quantized[key]
        got = self._quantize_weight_once(name, arr, axis)
        if key is not None:
            self._quantized[key] = got
        return got

    def _quantize_weight_once(
        self, name: str | None, arr: np.ndarray, axis: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if name is not None and name in self.rounded:
            rounded, scale = self.rounded[name]
            if axis is not None and scale.shape == (arr.shape[axis],):
                shape = [1] * arr.ndim
                shape[axis] = -1
                qmax = self.spec.weight_qmax
                q = np.clip(np.round(rounded / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
                return q, scale
        return quantize_weight(arr, axis, self.spec)

    def _bias(self, site: BiasSite) -> bool:
        node = site.node
        x = site.activation
        x_name = x.name or ""
        bias_value = node.inputs[site.index]
        b = graph_tools.constant(bias_value)
        w = graph_tools.constant(node.inputs[site.weight_index])
        if x_name not in self.params or b is None or w is None or bias_value is None:
            return False
        w_site = next(s for s in self.plan.weights if s.node is node)
        _, w_scale = self._quantize_weight(node.inputs[site.weight_index], w, w_site.axis)
        x_scale, _ = self.params[x_name]
        if w_scale.ndim and w_scale.shape[0] != b.shape[0]:
            return False
        q, scale = quantize_bias(b, x_scale, w_scale)
        base = bias_value.name or "bias"
        stored = self._stored(base, f"{base}_quantized", q, scale, bias_value, 0, node)
        node.replace_input_with(site.index, stored)
        drop_if_unused(self.graph, bias_value)
        return True


def drop_if_unused(graph: ir.Graph, value: ir.Value | None) -> None:
    """Remove a constant nothing reads any more (a weight or bias just replaced)."""
    if value is None or value.uses() or value.is_graph_output() or value.is_graph_input():
        return
    producer = value.producer()
    if producer is not None and graph_tools.is_std(producer, "Constant"):
        graph.remove(producer, safe=True)
    elif value.name and value.name in graph.initializers:
        graph.initializers.pop(value.name)


def count_qdq(model: ir.Model) -> dict[str, dict[str, int]]:
    """Per op type of the quantized graph: nodes, activation inputs read from a DQ,
    int8 weights, int32 biases, and outputs that feed a QuantizeLinear (directly or
    through a fused Relu/Clip). Plus totals under ``"QuantizeLinear"``/``"DequantizeLinear"``."""
    counts: dict[str, Counter[str]] = {}
    total = Counter(n.op_type for n in model.graph if graph_tools.is_std(n, *QDQ_OPS))
    for node in model.graph:
        if graph_tools.is_std(node, *QDQ_OPS, "Constant"):
            continue
        c: Counter[str] = Counter()
        for v in node.inputs:
            p = v.producer() if v is not None else None
            if p is not None and graph_tools.is_std(p, "Mul") and (w := int8_weight(v)) is not None:
                c["bias" if w[0].dtype == np.int32 else "weight"] += 1  # folded (fold.py)
                continue
            if p is None or not graph_tools.is_std(p, "DequantizeLinear"):
                continue
            src = p.inputs[0]
            if src is not None and src.is_initializer():
                c["bias" if src.dtype == ir.DataType.INT32 else "weight"] += 1
            else:
                c["input"] += 1
        out = node.outputs[0] if node.outputs else None
        hops = 0
        while out is not None and hops < 3:
            users = [u.node for u in out.uses()]
            if any(graph_tools.is_std(u, "QuantizeLinear") for u in users):
                c["output"] += 1
                break
            if len(users) == 1 and graph_tools.is_std(users[0], "Relu", "Clip"):
                out = users[0].outputs[0]
                hops += 1
                continue
            break
        if c and not (set(c) == {"output"} and graph_tools.is_std(node, "Relu", "Clip")):
            entry = counts.setdefault(node.op_type, Counter())
            entry["nodes"] += 1
            entry.update(c)
    result = {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}
    result.update({k: {"nodes": v} for k, v in sorted(total.items())})
    return result
