"""Dynamic INT8 for onnxruntime's CPU provider: int8 weights, activations quantized per call.

Rewrite, for every MatMul with a constant float 2-D weight W (K, N) on its right
and a computed tensor x on its left, and every Gemm with a constant B (transA 0,
alpha and beta 1, bias C constant or absent), not named in `exclude`:

    y = x @ W (+ C)  →  xq, xs, xz = DynamicQuantizeLinear(x)
                         y = Cast(MatMulInteger(xq, Wq, xz, 0), FLOAT) * (xs * s) (+ C)

with Wq int8 (K, N) and s float32 (N,), one symmetric scale per output column
(s = max|W[:, n]| / qmax). This is the form onnxruntime fuses into
DynamicQuantizeMatMul / MatMulIntegerToFloat (its MatMulIntegerToFloatFusion and
DynamicQuantizeMatMulFusion), checked in the tests on the optimized graph. One
DynamicQuantizeLinear serves every MatMul that reads the same x (Q, K and V).

What differs from onnxruntime's own `quantize_dynamic` (the peer, not a dependency):

- weights are rounded by GPTQ (`rounding.py`) from the second moments of each
  layer's input over `rounding_samples` calibration samples, when calibration data
  is given (round-to-nearest otherwise): the layer output error, not each weight's;
- SmoothQuant migration (`smooth.py`, `options.smooth_alpha`, default 0.7) first, when
  calibration data is given: the per-tensor activation quantization no longer spends
  its range on LayerNorm/GELU outlier channels (all-MiniLM-L6: mean cosine
  0.9933 -> 0.9974, worst 0.976 -> 0.991);
- MatMuls of two computed tensors (attention's Q·K^T, P·V) stay float;
- `reduce_range` (7-bit weights, ±63): onnxruntime's u8s8 kernels on x86 CPUs
  without VNNI multiply with AVX2's vpmaddubsw, which saturates the int16 sum of two
  u8·s8 products (255·127·2 > 32767); 7-bit weights cannot saturate (255·63·2).
  None: on when this CPU lacks VNNI (`saturating_cpu`), as the artifact runs where
  it is compiled for the CPU target; the choice is in the summary.

Large embedding tables are stored as int8 rows as in static mode (`embedding.py`).
Refuses (leaves float): weights that are not constant float 2-D tensors, shared
weights read by anything else than such MatMuls, Gemm with transA or alpha/beta ≠ 1.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.errors import PassInputError, PassOptionError
from passes.quantize.calibrate import run_with_outputs
from passes.quantize.data import CalibrationSource, CalibrationStream, model_inputs
from passes.quantize.embedding import QuantizeEmbeddingsPass
from passes.quantize.options import PtqOptions
from passes.quantize.params import quantize_weight
from passes.quantize.plan import QuantPlan, WeightSite
from passes.quantize.qdq import is_quantized
from passes.quantize.rounding import HessianCollector, round_weights
from passes.quantize.smooth import smooth
from passes.quantize.spec import CPU_SPEC, QuantSpec

__all__ = ["DynamicSummary", "find_layers", "quantize_dynamic", "saturating_cpu"]

logger = logging.getLogger(__name__)

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def saturating_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this is an x86 CPU whose u8s8 kernels saturate: no VNNI, so onnxruntime
    multiplies with (v)pmaddubsw, which adds pairs of u8·s8 products into int16 (an
    AVX2-only AMD EPYC: a two-block residual test model gave 10.4 dB where exact Q/DQ
    arithmetic gives 40 dB). VNNI and AMX accumulate in int32; other CPUs: False."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return not set(_VNNI_FLAGS) & set(flags.partition(":")[2].split())


@dataclass
class DynamicSummary:
    """What `quantize_dynamic` did, for the report (`to_dict` is JSON-ready)."""

    mode: str
    spec: str
    reduce_range: bool
    rounding: str
    samples: int
    layers: dict[str, int]  # quantized nodes per op type
    kept_float: list[str]
    embedding_tables: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    smoothing: dict[str, object] | None = None  # `smooth.SmoothSummary.to_dict`, None: off
    rounding_skipped: dict[str, str] = field(default_factory=dict)  # layer -> why not GPTQ

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _Layer:
    node: ir.Node
    weight: np.ndarray  # (K, N): as the MatMul multiplies it
    name: str  # the weight's initializer name
    value: ir.Value  # the float weight, dropped once nothing reads it


def find_layers(graph: ir.Graph, exclude: frozenset[str] = frozenset()) -> list[_Layer]:
    """The MatMul/Gemm nodes the module docstring rewrites, with their (K, N) weights."""
    out = []
    for node in graph:
        if node.name in exclude or len(node.inputs) < 2:
            continue
        x, w_value = node.inputs[0], node.inputs[1]
        w = graph_tools.constant(w_value)
        if x is None or w is None or w.ndim != 2 or w.dtype != np.float32:
            continue
        if graph_tools.constant(x) is not None or x.dtype not in (None, ir.DataType.FLOAT):
            continue  # untyped: the float weight makes x float too
        if graph_tools.is_std(node, "Gemm"):
            if not _plain_gemm(node):
                continue
            if graph_tools.attr_int(node, "transB", 0):
                w = w.T
        elif not graph_tools.is_std(node, "MatMul"):
            continue
        assert w_value is not None
        out.append(_Layer(node, np.ascontiguousarray(w), w_value.name or "", w_value))
    return out


def _plain_gemm(node: ir.Node) -> bool:
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    return (
        not graph_tools.attr_int(node, "transA", 0)
        and graph_tools.attr_float(node, "alpha", 1.0) == 1.0
        and graph_tools.attr_float(node, "beta", 1.0) == 1.0
        and (bias is None or graph_tools.constant(bias) is not None)
    )


def quantize_dynamic(
    model: ir.Model,
    calibration: CalibrationSource | None = None,
    options: PtqOptions | None = None,
    *,
    reduce_range: bool | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[ir.Model, DynamicSummary]:
    """Dynamic INT8 (module docstring) on a copy of `model`; returns (model, summary).

    `calibration` (optional) feeds GPTQ rounding when `options.rounding` is "gptq";
    `options.exclude` names nodes kept in float. Raises `PassInputError` for a model
    already quantized or without a layer to quantize, `PassOptionError` for unknown
    excluded nodes."""
    t0 = time.perf_counter()
    options = options or PtqOptions()
    if is_quantized(model):
        raise PassInputError(
            "the model is already quantized (it holds QuantizeLinear/DequantizeLinear nodes)"
        )
    if graph_tools.opset(model) < 11:
        raise PassInputError(
            f"dynamic INT8 needs opset 11 or newer (DynamicQuantizeLinear), the model has "
            f"opset {graph_tools.opset(model)}; upgrade it first"
        )
    work = graph_tools.clone(model)
    graph_tools.ensure_types(work)
    ir.passes.common.NameFixPass()(work)
    unknown = set(options.exclude) - {n.name for n in work.graph}
    if unknown:
        raise PassOptionError(f"cannot keep unknown nodes in float: {', '.join(sorted(unknown))}")
    rr = saturating_cpu() if reduce_range is None else reduce_range
    spec = CPU_SPEC.replace(name="cpu-dynamic", reduce_range=rr)
    smoothing = None  # before find_layers: it scales the weights the layers hold
    if calibration is not None and options.smooth_alpha is not None:
        smoothing = _smooth(work, calibration, options, preprocess)
    t_smooth = time.perf_counter() - t0
    layers = find_layers(work.graph, frozenset(options.exclude))
    if not layers:
        raise PassInputError(
            "no MatMul or Gemm with a constant float weight to quantize dynamically; "
            "use --quant-mode static"
        )
    rounded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    samples = 0
    if calibration is not None and options.rounding == "gptq":
        rounded, samples, skipped = _gptq(work, layers, calibration, options, spec, preprocess)
    t_round = time.perf_counter() - t0 - t_smooth
    _Rewriter(work.graph, spec, rounded).run(layers)
    embeddings = QuantizeEmbeddingsPass()
    embeddings(work)
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.node.op_type] = counts.get(layer.node.op_type, 0) + 1
    summary = DynamicSummary(
        mode="dynamic",
        spec=spec.name,
        reduce_range=rr,
        rounding="gptq" if rounded else "nearest",
        samples=samples,
        layers=counts,
        kept_float=sorted(options.exclude),
        embedding_tables=embeddings.tables,
        smoothing=smoothing,
        rounding_skipped=skipped,
        seconds={
            "smoothing": round(t_smooth, 3),
            "rounding": round(t_round, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    )
    return work, summary


def _stream(
    model: ir.Model,
    calibration: CalibrationSource,
    options: PtqOptions,
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
    cap: int,
) -> CalibrationStream:
    """The calibration samples a step reads: `options.samples`, at most `cap`."""
    return CalibrationStream(
        calibration,
        model_inputs(model),
        samples=min(options.samples or cap, cap),
        batch_size=options.batch_size,
        preprocess=preprocess,
    )


def _smooth(
    model: ir.Model,
    calibration: CalibrationSource,
    options: PtqOptions,
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, object]:
    """SmoothQuant migration (`smooth.py`) in place, from `options.smooth_samples` samples."""
    assert options.smooth_alpha is not None
    stream = _stream(model, calibration, options, preprocess, options.smooth_samples)
    summary = smooth(
        model, stream, options.smooth_alpha, exclude=options.exclude, threads=options.threads
    )
    return summary.to_dict()


def _gptq(
    model: ir.Model,
    layers: list[_Layer],
    calibration: CalibrationSource,
    options: PtqOptions,
    spec: QuantSpec,
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int, dict[str, str]]:
    """GPTQ-rounded (K, N) weights by initializer name, from the layers' input moments;
    the samples seen; the layers left to nearest rounding and why (the Hessian cap)."""
    stream = _stream(model, calibration, options, preprocess, options.rounding_samples)
    # GPTQ rounds each (K, N) weight as a MatMul: output channels on axis 1
    matmuls = [layer for layer in layers if graph_tools.is_std(layer.node, "MatMul")]
    plan = QuantPlan({}, [WeightSite(layer.node, 1, 1) for layer in matmuls], [], {}, [])
    collector = HessianCollector(plan)
    seen = run_with_outputs(
        model, collector.names, stream, collector.visit, threads=options.threads
    )
    if seen == 0:
        raise PassInputError("calibration data is empty")
    return round_weights(collector, spec), seen, dict(collector.skipped)


class _Rewriter:
    """Builds the DynamicQuantizeLinear → MatMulInteger → Cast → Mul (→ Add) chains."""

    def __init__(
        self, graph: ir.Graph, spec: QuantSpec, rounded: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.graph, self.spec, self.rounded = graph, spec, rounded
        self.taken = graph_tools.value_names(graph)
        self.taken.update(n.name for n in graph if n.name)
        self.quantized_input: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}
        self.weights: dict[str, tuple[ir.Value, ir.Value, ir.Value]] = {}

    def name(self, base: str) -> str:
        return graph_tools.unique_name(self.graph, base, self.taken)

    def init(self, base: str, array: np.ndarray) -> ir.Value:
        return graph_tools.new_initializer(self.graph, base, array, taken=self.taken)

    def add(self, op: str, inputs: list[ir.Value | None], base: str, **attrs: int) -> ir.Node:
        n = ir.node(op, inputs, attrs, name=self.name(f"{base}_{op}"), num_outputs=1)
        n.outputs[0].name = self.name(f"{base}_{op}_output")
        return n

    def run(self, layers: list[_Layer]) -> None:
        for layer in layers:
            self.rewrite(layer)
        for layer in layers:
            value = layer.value
            if value.name and not value.uses() and not value.is_graph_output():
                self.graph.initializers.pop(value.name, None)

    def weight(self, layer: _Layer) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(int8 weight, per-column scale, int8 zero points), once per initializer."""
        key = f"{layer.name}|{layer.node.op_type}|{graph_tools.attr_int(layer.node, 'transB', 0)}"
        if key not in self.weights:
            q, scale = quantize_weight(layer.weight, 1, self.spec)
            if layer.name in self.rounded and graph_tools.is_std(layer.node, "MatMul"):
                values, scale = self.rounded[layer.name]
                qmax = self.spec.weight_qmax
                q = np.clip(np.round(values / scale[None, :]), -qmax, qmax).astype(np.int8)
            base = layer.name or "weight"
            self.weights[key] = (
                self.init(f"{base}_int8", q),
                self.init(f"{base}_scale", scale.astype(np.float32)),
                self.init(f"{base}_zero_point", np.zeros(scale.shape, np.int8)),
            )
        return self.weights[key]

    def quantized(self, x: ir.Value, before: ir.Node) -> tuple[ir.Value, ir.Value, ir.Value]:
        """DynamicQuantizeLinear(x), shared by every rewritten reader of x."""
        if id(x) not in self.quantized_input:
            dql = ir.node(
                "DynamicQuantizeLinear",
                [x],
                name=self.name(f"{x.name}_DynamicQuantizeLinear"),
                num_outputs=3,
            )
            for out, suffix, dtype in zip(
                dql.outputs,
                ("quantized", "scale", "zero_point"),
                (ir.DataType.UINT8, ir.DataType.FLOAT, ir.DataType.UINT8),
                strict=True,
            ):
                out.name = self.name(f"{x.name}_{suffix}")
                out.type = ir.TensorType(dtype)
            producer = x.producer()
            if producer is not None:
                self.graph.insert_after(producer, [dql])
            else:
                self.graph.insert_before(before, [dql])
            self.quantized_input[id(x)] = (dql.outputs[0], dql.outputs[1], dql.outputs[2])
        return self.quantized_input[id(x)]

    def rewrite(self, layer: _Layer) -> None:
        node = layer.node
        x = node.inputs[0]
        assert x is not None
        base = node.name or "matmul"
        xq, xs, xz = self.quantized(x, node)
        wq, ws, wz = self.weight(layer)
        matmul = self.add("MatMulInteger", [xq, wq, xz, wz], base)
        matmul.outputs[0].type = ir.TensorType(ir.DataType.INT32)
        cast = self.add("Cast", [matmul.outputs[0]], base, to=ir.DataType.FLOAT)
        cast.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        scale = self.add("Mul", [xs, ws], f"{base}_scales")
        scale.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        mul = self.add("Mul", [cast.outputs[0], scale.outputs[0]], base)
        chain = [matmul, cast, scale, mul]
        result = mul.outputs[0]
        bias = node.inputs[2] if graph_tools.is_std(node, "Gemm") and len(node.inputs) > 2 else None
        if bias is not None:
            add = self.add("Add", [result, bias], base)
            chain.append(add)
            result = add.outputs[0]
        out = node.outputs[0]
        result.type, result.shape = out.type, out.shape
        self.graph.insert_before(node, chain)
        out.replace_all_uses_with(result, replace_graph_outputs=True)
        self.graph.remove(node, safe=True)
