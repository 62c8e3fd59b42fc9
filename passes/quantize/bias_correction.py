"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2, the
empirical variant; also AIMET's): remove the systematic shift that quantization
adds to each output channel of a Conv or Gemm.

For every weighted node that the plan quantizes, with output y (channel axis 1):

    bias[c] -= E_q[y_c] - E_fp[y_c]

where E_fp is the per-channel mean of y over the calibration subset in the float
model, and E_q the same mean in the Q/DQ model built from the current float model
(the onnxruntime CPU provider computes it in float on dequantized values, i.e.
the same arithmetic as the integer kernels up to rounding of the requantization).
The shift measured at a layer also carries what upstream layers passed on, so
correcting all layers at once over-corrects; the correction is therefore
repeated `rounds` times, each round measuring the model with the previous
corrections (a fixed-point iteration; two rounds bring the shifts down to the
noise of the subset on MobileNetV2). The pass changes the float model's biases
only; quantize it again afterwards. A Conv without a bias gets one.

Refuses: nodes whose bias is shared with another node or not a constant, and
MatMul (no bias input).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.calibrate import run_with_outputs
from passes.quantize.noise import sqnr_db

logger = logging.getLogger(__name__)


class _Means:
    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def visit(self, name: str, y: np.ndarray) -> None:
        axes = tuple(i for i in range(y.ndim) if i != 1)
        s = y.sum(axis=axes).astype(np.float64)
        self.sums[name] = self.sums.get(name, 0) + s
        self.counts[name] = self.counts.get(name, 0) + int(y.size // y.shape[1])

    def mean(self, name: str) -> np.ndarray:
        return self.sums[name] / max(self.counts[name], 1)


class _ErrorEnergy:
    """Per node: the float twin's output energy and the quantized output's error energy."""

    def __init__(self, pairs: Mapping[str, tuple[str, str]]) -> None:
        self.pairs = dict(pairs)
        self.signal: dict[str, float] = dict.fromkeys(self.pairs, 0.0)
        self.noise: dict[str, float] = dict.fromkeys(self.pairs, 0.0)

    def visit(self, outputs: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
        for node, (q_out, shadow) in self.pairs.items():
            if q_out in outputs and shadow in outputs:
                ref = outputs[shadow].reshape(-1)
                diff = outputs[q_out].reshape(-1) - ref
                # float32 dot products: ~1e-4 relative at worst, 0.0004 dB, 10x the speed
                self.signal[node] += float(np.dot(ref, ref))
                self.noise[node] += float(np.dot(diff, diff))

    def sqnr_db(self) -> dict[str, float]:
        return {
            node: round(sqnr_db(self.signal[node], max(noise, 1e-30)), 2)  # finite: JSON
            for node, noise in self.noise.items()
        }


def correctable_nodes(model: ir.Model, names: Iterable[str]) -> list[ir.Node]:
    """Conv/Gemm nodes among `names` whose bias can be changed (constant, not shared)."""
    wanted = set(names)
    out = []
    for node in model.graph:
        if node.name not in wanted or not graph_tools.is_std(node, "Conv", "Gemm"):
            continue
        if graph_tools.is_std(node, "Gemm") and (
            graph_tools.attr_float(node, "alpha", 1.0) != 1.0
            or graph_tools.attr_float(node, "beta", 1.0) != 1.0
        ):
            continue
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            b = node.inputs[2]
            arr = graph_tools.constant(b)
            if arr is None or arr.ndim != 1 or len(b.uses()) != 1:
                continue
        out.append(node)
    return out


def correct_bias(
    model: ir.Model,
    quantize: Callable[[ir.Model], ir.Model],
    nodes: list[str],
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    *,
    rounds: int = 1,
    threads: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
    local_sqnr_db: dict[str, float] | None = None,
) -> dict[str, float]:
    """Correct the float biases of `nodes` in place; returns the largest |shift| removed per node.
    `progress(samples done, None)` follows the passes over the data (counting on across rounds).
    `local_sqnr_db`, when given, receives each node's local quantization error as it
    comes for free here: the SQNR (dB) of its quantized output against its float twin
    fed the same (pre-Q/DQ) input, before this correction — the error the layer itself
    adds, not what accumulates from the layers before it.

    `quantize(model)` must return a Q/DQ copy of the float model (same node names);
    `batches()` a fresh iterable of the calibration subset each time it is called.
    """
    targets = correctable_nodes(model, nodes)
    if not targets:
        return {}
    removed: dict[str, float] = {n.name or "": 0.0 for n in targets}
    reference = graph_tools.clone(model)  # shadows keep the original float biases
    offset = 0
    for r in range(rounds):
        qmodel = quantize(model)
        pairs = _add_shadows(qmodel, reference, {n.name or "" for n in targets})
        means = _Means()
        names = [name for pair in pairs.values() for name in pair]
        energy = _ErrorEnergy(pairs) if local_sqnr_db is not None and r == 0 else None
        start = offset
        offset += run_with_outputs(
            qmodel,
            names,
            batches(),
            means.visit,
            threads=threads,
            max_batch=4,
            progress=_counting_on(progress, start),
            extra=None if energy is None else energy.visit,
        )
        if energy is not None and local_sqnr_db is not None:
            local_sqnr_db.update(energy.sqnr_db())
        worst = 0.0
        for node in targets:
            if node.name not in pairs:
                continue
            q_out, shadow = pairs[node.name or ""]
            shift = means.mean(q_out) - means.mean(shadow)
            _subtract_bias(model, node, shift)
            m = float(np.abs(shift).max())
            worst = max(worst, m)
            removed[node.name or ""] = max(removed[node.name or ""], m)
        logger.info("bias correction round %d: largest channel shift %.4g", r + 1, worst)
    return removed


def _counting_on(
    progress: Callable[[int, int | None], None] | None, start: int
) -> Callable[[int, int | None], None] | None:
    """`progress` with the samples of earlier rounds added to `done`."""
    if progress is None:
        return None
    report = progress
    return lambda done, _: report(start + done, None)


def copy_biases(source: ir.Model, target: ir.Model, names: Iterable[str]) -> None:
    """Give the nodes `names` of `target` the biases they have in `source` (a copy of
    `target` whose biases `correct_bias` changed); nodes without a bias in `source`
    are left alone."""
    wanted = set(names)
    biases = {
        n.name or "": graph_tools.constant(n.inputs[2])
        for n in source.graph
        if n.name in wanted and len(n.inputs) > 2 and n.inputs[2] is not None
    }
    for node in target.graph:
        new = biases.get(node.name or "")
        if new is None:
            continue
        has = len(node.inputs) > 2 and node.inputs[2] is not None
        old = graph_tools.constant(node.inputs[2]) if has else None
        _subtract_bias(target, node, (old if old is not None else 0) - new.astype(np.float64))


def _add_shadows(qmodel: ir.Model, model: ir.Model, names: set[str]) -> dict[str, tuple[str, str]]:
    """Beside each quantized target in `qmodel`, a float copy of the node fed with the
    tensor its input Q/DQ pair quantizes and the weight and bias of `model`.
    Returns {node name: (quantized output, shadow output)}."""
    floats = {n.name: n for n in model.graph if n.name in names}
    graph = qmodel.graph
    taken = graph_tools.value_names(graph)
    pairs: dict[str, tuple[str, str]] = {}
    for node in list(graph):
        if node.name not in floats or not node.outputs:
            continue
        ref = floats[node.name]
        x = node.inputs[0]
        dq = x.producer() if x is not None else None
        if dq is not None and graph_tools.is_std(dq, "DequantizeLinear"):
            q = dq.inputs[0].producer() if dq.inputs[0] is not None else None
            if q is not None and graph_tools.is_std(q, "QuantizeLinear"):
                x = q.inputs[0]
        inputs: list[ir.Value | None] = [x]
        for i in range(1, len(ref.inputs)):
            arr = graph_tools.constant(ref.inputs[i])
            if arr is None:
                break
            v = graph_tools.new_initializer(graph, f"{node.name}_shadow_in{i}", arr)
            taken.add(v.name or "")
            inputs.append(v)
        else:
            shadow = graph_tools.node_copy(graph, node, inputs, f"{node.name}_shadow", taken)
            graph.insert_after(node, [shadow])
            pairs[node.name or ""] = (node.outputs[0].name or "", shadow.outputs[0].name or "")
    return pairs


def _subtract_bias(model: ir.Model, node: ir.Node, shift: np.ndarray) -> None:
    graph = model.graph
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        old = node.inputs[2]
        b = graph_tools.constant(old)
        assert b is not None
        new = (b.astype(np.float64) - shift).astype(b.dtype)
        if old.const_value is not None and old.is_initializer():
            old.const_value = ir.tensor(new, name=old.name)
            return
    else:
        w = graph_tools.constant(node.inputs[1])
        dtype = w.dtype if w is not None else np.float32
        new = (-shift).astype(dtype)
        if len(node.inputs) < 3:
            node.resize_inputs(3)
    node.replace_input_with(2, graph_tools.new_initializer(graph, f"{node.name}_bias", new))
