"""SmoothQuant-style migration: move an activation's outlier channels into the weights.

A transformer's LayerNorm and GELU outputs carry a few channels whose magnitude is
10-100× the rest; quantizing such an activation per tensor (dynamic INT8's
DynamicQuantizeLinear, static INT8's one scale per tensor) spends its 8 bits on those
channels and rounds the others to a handful of levels. Weights are quantized per
output column, so they can absorb a per-input-channel factor at almost no cost.

For every activation X read by weighted MatMuls (a group: Q, K and V read one
LayerNorm output; FFN2 reads the GELU output), with input channel j on X's last axis:

    s_j = max|X_j|^α / max_group|W_j|^(1-α)        (Xiao et al., SmoothQuant, 2022)
    X @ W = (X / s) @ (diag(s) · W)

so every weight of the group gets its row j multiplied by s_j, and X is divided by s:

- folded into the producer when that is exact and X has no reader outside the group:
  an ONNX LayerNormalization or onnxruntime's (Skip)LayerNormalization output 0 with
  constant scale and bias that nothing else reads (γ/s, β/s);
- else one `Mul(X, 1/s)` placed before the group, shared by its MatMuls (a LayerNorm
  output that also feeds a residual, a GELU output: GELU(x)/s is not GELU of anything).

max|X_j| comes from calibration data (one run with the group inputs as extra outputs).
s is clipped to [1e-2, 1e2] and set to 1 where X_j or W_j is all zero, so no channel is
scaled into float32's underflow or overflow.

Leaves alone an activation without outlier channels (`outlier_ratio`, the largest
channel maximum over the median one, under `MIN_OUTLIER_RATIO`): there, migration only
spends the weights' precision. Refuses (leaves alone) a group whose weight is not a
constant float 2-D MatMul right operand that only the group reads, an X whose last
axis is unknown, and every graph without such a group: a CNN (Conv/Gemm only) is
untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.calibrate import run_with_outputs

__all__ = ["SmoothSummary", "find_groups", "smooth"]

logger = logging.getLogger(__name__)

#: A group whose activation's largest channel maximum is under this many times the
#: median channel's has no outlier channels to migrate and is left alone: random-init
#: ViT, GPT-2 and Llama activations measure 1.4-2.1, and smoothing them cost static
#: INT8 cosine (ViT-tiny 0.9995 -> 0.9969); all-MiniLM-L6's LayerNorm outputs measure
#: 3.6-17.
MIN_OUTLIER_RATIO = 3.0

_LAYER_NORMS = frozenset({"LayerNormalization", "SkipLayerNormalization"})
_S_MIN, _S_MAX = 1e-2, 1e2


@dataclass(frozen=True)
class Group:
    """The weighted MatMuls that read one activation `x`."""

    x: ir.Value
    matmuls: tuple[ir.Node, ...]

    @property
    def weights(self) -> list[ir.Value]:
        return [n.inputs[1] for n in self.matmuls if n.inputs[1] is not None]


@dataclass
class SmoothSummary:
    """What `smooth` did, for the report."""

    alpha: float
    groups: int = 0
    folded: int = 0  # groups whose 1/s went into a LayerNorm's γ and β
    muls: int = 0  # groups that got a Mul(x, 1/s)
    range_ratio: float = 1.0  # median over groups of max|X/s| / max|X|
    skipped: list[str] = field(default_factory=list)
    even: list[str] = field(default_factory=list)  # no outlier channels: left alone

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "groups": self.groups,
            "folded": self.folded,
            "muls": self.muls,
            "range_ratio": round(self.range_ratio, 4),
            "even": len(self.even),
        }


def _weight_ok(node: ir.Node) -> bool:
    w_value = node.inputs[1] if len(node.inputs) > 1 else None
    w = graph_tools.constant(w_value)
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return False
    assert w_value is not None
    return all(use.node is node for use in w_value.uses()) and not w_value.is_graph_output()


def find_groups(graph: ir.Graph, exclude: Iterable[str] = ()) -> list[Group]:
    """Each computed float activation with the MatMuls (constant 2-D weights) that read it
    on the left; a group is skipped when any of its weights is shared or not constant."""
    skip = set(exclude)
    by_x: dict[int, tuple[ir.Value, list[ir.Node]]] = {}
    for node in graph:
        if not graph_tools.is_std(node, "MatMul") or len(node.inputs) != 2:
            continue
        x = node.inputs[0]
        if x is None or graph_tools.constant(x) is not None or node.name in skip:
            continue
        if graph_tools.constant(node.inputs[1]) is None:
            continue
        by_x.setdefault(id(x), (x, []))[1].append(node)
    groups = []
    for x, nodes in by_x.values():
        if all(_weight_ok(n) for n in nodes) and len({n.inputs[1] for n in nodes}) == len(nodes):
            groups.append(Group(x, tuple(nodes)))
    return groups


def smooth(
    model: ir.Model,
    batches: Iterable[Mapping[str, np.ndarray]],
    alpha: float = 0.5,
    *,
    exclude: Iterable[str] = (),
    threads: int = 0,
) -> SmoothSummary:
    """Smooth every group of `model` in place (module docstring) from the channel maxima
    of its activations over `batches`; returns what was done."""
    summary = SmoothSummary(alpha=alpha)
    groups = find_groups(model.graph, exclude)
    if not groups:
        return summary
    names = [g.x.name or "" for g in groups]
    maxima: dict[str, np.ndarray] = {}

    def visit(name: str, array: np.ndarray) -> None:
        m = np.abs(array.reshape(-1, array.shape[-1])).max(0).astype(np.float64)
        maxima[name] = np.maximum(maxima[name], m) if name in maxima else m

    run_with_outputs(model, names, batches, visit, threads=threads)
    ratios = []
    for group, name in zip(groups, names, strict=True):
        x_max = maxima.get(name)
        if x_max is None:
            summary.skipped.append(name)
            continue
        if outlier_ratio(x_max) < MIN_OUTLIER_RATIO:
            summary.even.append(name)
            continue
        s = _scales(x_max, [graph_tools.constant(w) for w in group.weights], alpha)
        if s is None:
            summary.skipped.append(name)
            continue
        _apply(model.graph, group, s, summary)
        ratios.append(float((x_max / s).max() / max(x_max.max(), 1e-30)))
    summary.groups = len(ratios)
    summary.range_ratio = float(np.median(ratios)) if ratios else 1.0
    logger.info("smoothed %d activations (alpha %.2f)", summary.groups, alpha)
    return summary


def outlier_ratio(x_max: np.ndarray) -> float:
    """The largest channel maximum over the median of the nonzero ones (1: all alike)."""
    live = x_max[x_max > 0]
    return float(live.max() / np.median(live)) if live.size else 1.0


def _scales(x_max: np.ndarray, weights: list[np.ndarray | None], alpha: float) -> np.ndarray | None:
    """s_j = max|X_j|^α / max|W_j|^(1-α), clipped; None when shapes disagree."""
    if any(w is None or w.shape[0] != x_max.shape[0] for w in weights):
        return None
    w_max = np.max([np.abs(w).max(1) for w in weights if w is not None], axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.power(x_max, alpha) / np.power(w_max, 1.0 - alpha)
    s = np.where((x_max > 0) & (w_max > 0) & np.isfinite(s), s, 1.0)
    return np.clip(s, _S_MIN, _S_MAX)


def _apply(graph: ir.Graph, group: Group, s: np.ndarray, summary: SmoothSummary) -> None:
    for w in group.weights:
        array = graph_tools.constant(w)
        assert array is not None
        graph_tools.set_initializer(w, (array * s[:, None]).astype(np.float32))
    if _fold(group, s):
        summary.folded += 1
        return
    inv = graph_tools.new_initializer(
        graph, f"{group.x.name}_smooth_inv_scale", (1.0 / s).astype(np.float32)
    )
    mul = ir.node("Mul", [group.x, inv], name=f"{group.x.name}_smooth_Mul", num_outputs=1)
    out = mul.outputs[0]
    out.name = graph_tools.unique_name(
        graph, f"{group.x.name}_smoothed", graph_tools.value_names(graph)
    )
    out.type, out.shape = group.x.type, group.x.shape
    graph.insert_before(group.matmuls[0], [mul])
    for node in group.matmuls:
        node.replace_input_with(0, out)
    summary.muls += 1


def _fold(group: Group, s: np.ndarray) -> bool:
    """Divide a LayerNorm's γ and β by s when X is its output 0 and only the group reads it."""
    producer = group.x.producer()
    if (
        producer is None
        or producer.op_type not in _LAYER_NORMS
        or producer.outputs[0] is not group.x
    ):
        return False
    if group.x.is_graph_output() or any(u.node not in group.matmuls for u in group.x.uses()):
        return False
    # LayerNormalization(x, γ, β); SkipLayerNormalization(x, skip, γ, β, bias)
    first = 1 if producer.op_type == "LayerNormalization" else 2
    params = [producer.inputs[i] if len(producer.inputs) > i else None for i in (first, first + 1)]
    arrays: list[np.ndarray | None] = []
    for v in params:
        if v is None:
            arrays.append(None)
            continue
        a = graph_tools.exclusive_constant(v, producer, "LayerNorm parameter")
        if isinstance(a, str) or a.shape != s.shape:
            return False
        arrays.append(a)
    if arrays[0] is None:
        return False
    for v, param in zip(params, arrays, strict=True):
        if v is not None and param is not None:
            graph_tools.set_initializer(v, (param / s).astype(np.float32))
    return True
