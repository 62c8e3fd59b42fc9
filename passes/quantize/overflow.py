"""Layers whose int8 kernel overflows on this CPU, found by measurement, and two remedies.

x86 CPUs with AVX2 but without VNNI multiply uint8 activations by int8 weights
with VPMADDUBSW, which adds each pair of adjacent products into an int16 *with
saturation*: 255 * 127 twice does not fit. onnxruntime documents this; its remedy,
7-bit weights in every layer (`reduce_range`), costs resolution everywhere. In
MobileNetV2 the overflow hits the 1x1 expand convs, whose inputs (the residual
stream, zero point ~131) sit at large uint8 values: on an AVX2-only EPYC the
deployed kernels gave 17.5 dB held-out logit SQNR where exact Q/DQ arithmetic gives
22.0 (session 22; the earlier 21-22 dB figures were measured on VNNI CPUs).

Which layers overflow depends on the CPU, the weights and the data, so it is
measured, not assumed from CPU flags: `kernel_errors` runs the Q/DQ model in
onnxruntime's optimized kernels with, beside each fused weighted layer, a float
twin fed the same dequantized input with the dequantized weights and bias and the
same Relu/Clip; the layer's output QuantizeLinear is applied to the twin in numpy
(in the graph, onnxruntime would quantize the twin's float weight itself and fuse
it into an integer kernel too). The layer's error is the mean squared difference of
the two uint8 outputs, in output steps squared (a layer whose output stays float,
a QGemm or MatMulIntegerToFloat, in steps of an 8-bit quantizer over the twin's
range). On MobileNetV2 here: 16 of 51 layers measure 0.013-5.5, every other one at
most 0.004 (float summation order: a rare one-step tie). A layer above `THRESHOLD`
(0.01) is overflowing. On a CPU
without the overflow (VNNI, ARM's dot products) every layer measures ~0 and the
model is left as it is.

The remedies (`PtqOptions.overflow_weights`, applied by `steps.OverflowGuard`):

- ``"7bit"`` (default): GPTQ rounds the overflowing layers' channels that measured
  above `CHANNEL_THRESHOLD` again to ±63, which cannot overflow (2 * 255 * 63 < 2^15)
  and keeps the u8s8 kernel; the other channels keep ±127. The channels left at 8
  bits were judged on the probe's samples only, and a layer fed by one that
  overflowed (saturated, so smaller) may overflow once that one is fixed, so the
  model is measured again and what overflows now is narrowed too (up to
  `steps.NARROWING_ROUNDS`); a layer still overflowing after that stores uint8
  weights. MobileNetV2: 1,943 of the 16 layers' 7,424 channels, one round, 21.85 dB
  held-out (deployed = exact), latency as without the guard; narrowing whole layers
  gave 21.41 dB. The onnx package's `light_squeezenet` (`--calib random`) had 12 layers
  overflow, then 13 more once those were narrowed, and needs no uint8 layer; with a
  single re-measurement, 12 layers were stored as uint8 instead.
- ``"uint8"``: `store_uint8` keeps the 8-bit values and stores them as uint8 with
  zero point 128 (w + 128), which sends the layer to onnxruntime's U8U8 kernel
  (widens before multiplying): 21.9 dB, but 1.11x FP32 latency here.

Measured and rejected: keeping each same-sign pair of adjacent int8 weights within
|q| + |q'| <= 128 during GPTQ removes the overflow too (so the kernel does pair
adjacent input channels) but cost 12 dB: the expand convs hold many large pairs.

Only for onnxruntime's CPU form (uint8 activations, int8 weights): the fused
DQ -> op (-> Relu/Clip) -> Q groups and weighted ops whose output stays float.
TensorRT's symmetric int8 form runs on other kernels; dynamic INT8 (`dynamic.py`)
still narrows every layer by the CPU's flags. QAT exports get `store_uint8`
(`passes/qat/stage.py`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.params import dequantize_weight
from passes.quantize.qdq import drop_if_unused
from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

THRESHOLD = 0.01  # mean squared output difference, in output quantization steps squared
#: an overflowing layer's channels above this get 7-bit weights (with 0.01, MobileNetV2's
#: unflagged channels still overflowed on held-out crops: 0.2 dB; with 0.001 they did not)
CHANNEL_THRESHOLD = 0.001
WEIGHTED = ("Conv", "Gemm", "MatMul")
FUSED = ("Relu", "Clip")  # elementwise ops onnxruntime folds between the op and its Q


def applies(spec: QuantSpec) -> bool:
    """Whether `spec` is onnxruntime's U8S8 form, the one whose kernels can overflow."""
    return spec.activation_dtype == "uint8" and spec.weight_dtype == "int8"


@dataclass
class OverflowCheck:
    """What the check measured and changed, for the report (`to_dict` is JSON-ready)."""

    saturating_kernels: bool = True  # the kernel probe's finding (False: nothing probed)
    probed: int = 0
    samples: int = 0
    errors: dict[str, float] = field(default_factory=dict)  # layer -> steps², as first built
    overflowing: list[str] = field(default_factory=list)  # above THRESHOLD when measured
    #: per output channel of each overflowing layer: its error (steps²)
    channel_errors: dict[str, np.ndarray] = field(default_factory=dict)
    seven_bit: dict[str, int] = field(default_factory=dict)  # layer -> channels rounded to ±63
    uint8_weights: list[str] = field(default_factory=list)  # stored as uint8

    def add(self, later: OverflowCheck) -> None:
        """Take in a later measurement's newly overflowing layers (their errors and
        channels as that measurement found them)."""
        for layer in later.overflowing:
            if layer not in self.channel_errors:
                self.overflowing.append(layer)
                self.errors[layer] = later.errors[layer]
                self.channel_errors[layer] = later.channel_errors[layer]

    def row_qmax(self, qmax: int, narrow: int) -> dict[str, np.ndarray]:
        """Per overflowing layer, the largest integer of each output channel: `narrow`
        where the channel measured above `CHANNEL_THRESHOLD`, else `qmax`."""
        return {
            layer: np.where(errors > CHANNEL_THRESHOLD, narrow, qmax)
            for layer, errors in self.channel_errors.items()
        }

    def to_dict(self) -> dict[str, object]:
        worst = sorted(self.errors.items(), key=lambda kv: -kv[1])[:5]
        return {
            "saturating_kernels": self.saturating_kernels,
            "probed_layers": self.probed,
            "samples": self.samples,
            "threshold_steps2": THRESHOLD,
            "overflowing": list(self.overflowing),
            "seven_bit_channels": dict(self.seven_bit),  # layer -> channels at ±63
            "uint8_weights": list(self.uint8_weights),
            "worst": {name: round(err, 4) for name, err in worst},
            "overflowing_steps2": {name: round(self.errors[name], 4) for name in self.overflowing},
        }


@dataclass(frozen=True)
class _Site:
    node: ir.Node  # the weighted op
    weight_dq: ir.Node  # the DequantizeLinear of its int8 weight
    chain: tuple[ir.Node, ...]  # Relu/Clip between it and its output Q
    q: ir.Node | None  # the QuantizeLinear of its (activated) output; None: a float output


def _int8_weight_dq(node: ir.Node, dtypes: tuple[type, ...] = (np.int8,)) -> ir.Node | None:
    """The DequantizeLinear of `node`'s constant int8 (or `dtypes`) weight (input 1)."""
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    dq = node.inputs[1].producer()
    if dq is None or not graph_tools.is_std(dq, "DequantizeLinear"):
        return None
    w = graph_tools.constant(dq.inputs[0])
    return dq if w is not None and w.dtype.type in dtypes else None


def _sites(model: ir.Model, dtypes: tuple[type, ...] = (np.int8,)) -> list[_Site]:
    """Weighted ops with an int8 weight whose output reaches one QuantizeLinear through
    Relu/Clip only (the groups onnxruntime fuses into one integer kernel), and those
    whose own output stays float (a Gemm or MatMul onnxruntime runs as QGemm or
    MatMulIntegerToFloat: integer products too)."""
    out = []
    for node in model.graph:
        if not graph_tools.is_std(node, *WEIGHTED) or not node.outputs:
            continue
        dq = _int8_weight_dq(node, dtypes)
        if dq is None:
            continue
        value, chain = node.outputs[0], list[ir.Node]()
        while True:
            users = [use.node for use in value.uses()]
            single = len(users) == 1 and not value.is_graph_output()
            if single and graph_tools.is_std(users[0], "QuantizeLinear"):
                out.append(_Site(node, dq, tuple(chain), users[0]))
                break
            fused = single and graph_tools.is_std(users[0], *FUSED)
            if not fused or users[0].inputs[0] is not value:
                if not chain:
                    out.append(_Site(node, dq, (), None))  # float output
                break
            chain.append(users[0])
            value = users[0].outputs[0]
    return out


def _dequantize(dq: ir.Node) -> np.ndarray | None:
    """A constant DequantizeLinear's float output, computed here."""
    x = graph_tools.constant(dq.inputs[0])
    scale = graph_tools.constant(dq.inputs[1])
    if x is None or scale is None:
        return None
    zp_value = dq.inputs[2] if len(dq.inputs) > 2 else None
    zp = graph_tools.constant(zp_value) if zp_value is not None else None
    axis = graph_tools.attr_int(dq, "axis", 1) if scale.size > 1 else None
    return dequantize_weight(x, scale.reshape(-1) if axis is not None else scale, axis, zp)


def _float_input(value: ir.Value | None) -> np.ndarray | None:
    """A constant input's float value: itself, or its DequantizeLinear's output."""
    if value is None:
        return None
    producer = value.producer()
    if producer is not None and graph_tools.is_std(producer, "DequantizeLinear"):
        return _dequantize(producer)
    array = graph_tools.constant(value)
    return None if array is None else array.astype(np.float32)


@dataclass(frozen=True)
class _Pair:
    real: str  # the layer's quantized output (its Q's), or its float output
    twin: str  # the float twin's output, before quantization
    quantize: Callable[[np.ndarray], np.ndarray] | None  # the layer's Q, in numpy
    axis: int  # the output's channel axis: 1 for a Conv (NCHW), the last for Gemm/MatMul

    def squared_steps(self, real: np.ndarray, twin: np.ndarray) -> np.ndarray:
        """The squared difference in output steps: of the layer's Q, or for a float
        output of an 8-bit quantizer over the twin's observed range."""
        if self.quantize is not None:
            return np.square(real.astype(np.float64) - self.quantize(twin))
        step = max(float(twin.max()) - float(twin.min()), 1e-30) / 255
        return np.square((real.astype(np.float64) - twin) / step)


def _requantizer(q: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    """The per-tensor QuantizeLinear `q` as a numpy function (round half to even);
    None when it is not one (per-axis, or parameters computed at run time)."""
    scale = graph_tools.constant(q.inputs[1])
    zp_value = q.inputs[2] if len(q.inputs) > 2 else None
    zp = graph_tools.constant(zp_value) if zp_value is not None else None
    if scale is None or scale.size != 1 or (zp_value is not None and zp is None):
        return None
    dtype = np.uint8 if zp is None else zp.dtype
    info = np.iinfo(dtype)
    zero = 0.0 if zp is None else float(zp)
    step = np.float32(scale.reshape(()))
    return lambda y: np.clip(np.rint(y / step) + zero, info.min, info.max)


def _channel_axis(node: ir.Node) -> int:
    return 1 if graph_tools.is_std(node, "Conv") else -1


def _add_twins(model: ir.Model, sites: list[_Site]) -> dict[str, _Pair]:
    """Beside each site, its float twin (see module docstring), in place. The twin's
    QuantizeLinear is applied in numpy (`_Pair.quantize`): in the graph, onnxruntime
    would see DQ → Conv(float weight) → Q, quantize that weight itself (per tensor) and
    fuse the twin into an integer kernel too."""
    graph = model.graph
    taken = graph_tools.value_names(graph)
    pairs: dict[str, _Pair] = {}
    for site in sites:
        name = site.node.name or ""
        inputs: list[ir.Value | None] = [site.node.inputs[0]]
        for i in range(1, len(site.node.inputs)):
            array = _float_input(site.node.inputs[i])
            if array is None:
                break
            inputs.append(
                graph_tools.new_initializer(graph, f"{name}_twin_in{i}", array, taken=taken)
            )
        else:
            nodes = [graph_tools.node_copy(graph, site.node, inputs, f"{name}_twin", taken)]
            for original in site.chain:
                ins = [nodes[-1].outputs[0], *original.inputs[1:]]
                nodes.append(graph_tools.node_copy(graph, original, ins, f"{name}_twin", taken))
            value = nodes[-1].outputs[0]
            if site.q is None:
                graph.insert_after(site.node, nodes)
                real = site.node.outputs[0].name or ""
                pairs[name] = _Pair(real, value.name or "", None, _channel_axis(site.node))
            elif (requantize := _requantizer(site.q)) is not None:
                graph.insert_after(site.q, nodes)
                real = site.q.outputs[0].name or ""
                pairs[name] = _Pair(real, value.name or "", requantize, _channel_axis(site.node))
    return pairs


def channel_errors(
    qmodel: ir.Model,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
    weights: tuple[type, ...] = (np.int8,),
) -> tuple[dict[str, np.ndarray], int]:
    """Per output channel of each fused weighted layer (weights of a `weights` type): the
    mean squared uint8 output difference between onnxruntime's optimized kernels and
    exact arithmetic (steps²); and the samples run."""
    probe = graph_tools.clone(qmodel)
    pairs = _add_twins(probe, _sites(probe, weights))
    if not pairs:
        return {}, 0
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(pairs, 0)
    outputs = [name for pair in pairs.values() for name in (pair.real, pair.twin)]
    session = graph_tools.ort_session(
        graph_tools.model_bytes(probe, outputs), threads=threads, optimize=True
    )
    names = [o.name for o in session.get_outputs()]
    samples = 0
    for feeds in batches:
        got = dict(zip(names, session.run(None, dict(feeds)), strict=True))
        for layer, pair in pairs.items():
            squared = np.moveaxis(pair.squared_steps(got[pair.real], got[pair.twin]), pair.axis, 0)
            per_channel = squared.reshape(squared.shape[0], -1).sum(axis=1)
            sums[layer] = sums[layer] + per_channel if layer in sums else per_channel
            counts[layer] += squared.size // max(squared.shape[0], 1)
        samples += int(next(iter(feeds.values())).shape[0])
    return {k: v / max(counts[k], 1) for k, v in sums.items()}, samples


def kernel_errors(
    qmodel: ir.Model,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
    weights: tuple[type, ...] = (np.int8,),
) -> tuple[dict[str, float], int]:
    """`channel_errors` averaged over each layer's channels: the layer's mean squared
    output difference (steps²), and the samples run."""
    per_channel, samples = channel_errors(qmodel, batches, threads=threads, weights=weights)
    return {k: float(v.mean()) for k, v in per_channel.items()}, samples


def store_uint8(qmodel: ir.Model, layers: Iterable[str]) -> list[str]:
    """Store the int8 weights of `layers` as uint8 with zero point 128 (the same values),
    in place; returns the layers changed."""
    wanted = set(layers)
    graph = qmodel.graph
    taken = graph_tools.value_names(graph)
    changed = []
    for node in graph:
        if node.name not in wanted or not graph_tools.is_std(node, *WEIGHTED):
            continue
        dq = _int8_weight_dq(node)
        if dq is None or len(dq.outputs[0].uses()) != 1:
            continue
        w = graph_tools.constant(dq.inputs[0])
        scale = graph_tools.constant(dq.inputs[1])
        assert w is not None and scale is not None  # checked by _int8_weight_dq
        shifted = (w.astype(np.int16) + 128).astype(np.uint8)
        base = node.name or "weight"
        old = list(dq.inputs)
        dq.replace_input_with(
            0, graph_tools.new_initializer(graph, f"{base}_u8", shifted, taken=taken)
        )
        zero = graph_tools.new_initializer(
            graph, f"{base}_u8_zero_point", np.full(scale.shape, 128, np.uint8), taken=taken
        )
        if len(dq.inputs) < 3:
            dq.resize_inputs(3)
        dq.replace_input_with(2, zero)
        for value in (old[0], old[2] if len(old) > 2 else None):
            drop_if_unused(graph, value)
        changed.append(node.name or "")
    return changed


#: the worst case a u8s8 kernel meets: every activation at 255, every weight at 127
_PROBE_CHANNELS = 64
_PROBE_TARGET = 200  # the exact result's output step: a saturated pair sum halves it


def _probe_layer(
    graph: ir.Graph, x: ir.Value, op: str, weight_shape: tuple[int, ...], **attrs: int
) -> None:
    """One weighted layer of the kernel probe on `x` (255 everywhere after its Q/DQ), with
    int8 weights of 127 (output channels first: a Gemm's weight is transposed), scale 1
    per output channel, and an output Q whose step puts the exact result at
    `_PROBE_TARGET`."""
    name = f"probe_{len(graph)}"
    w = graph_tools.new_initializer(graph, f"{name}_w", np.full(weight_shape, 127, np.int8))
    scale = graph_tools.new_initializer(graph, f"{name}_ws", np.ones(weight_shape[0], np.float32))
    wzero = graph_tools.new_initializer(graph, f"{name}_wz", np.zeros(weight_shape[0], np.int8))
    wdq = ir.node("DequantizeLinear", [w, scale, wzero], {"axis": 0})
    layer = ir.node(op, [x, wdq.outputs[0]], dict(attrs), name=name)
    exact = 255.0 * 127.0 * float(np.prod(weight_shape[1:]))
    step = graph_tools.new_initializer(
        graph, f"{name}_ys", np.array(exact / _PROBE_TARGET, np.float32)
    )
    zero = graph_tools.new_initializer(graph, f"{name}_yz", np.array(0, np.uint8))
    q = ir.node("QuantizeLinear", [layer.outputs[0], step, zero])
    graph.extend([wdq, layer, q])
    graph.outputs.append(q.outputs[0])


def _kernel_probe() -> tuple[ir.Model, dict[str, np.ndarray]]:
    """A Q/DQ model of the kernel paths onnxruntime's CPU provider picks for u8s8 layers
    (a pointwise and a grouped Conv, a depthwise Conv, a Gemm), fed their worst case."""
    c = _PROBE_CHANNELS
    image = ir.Value(
        name="image", shape=ir.Shape([1, c, 8, 8]), type=ir.TensorType(ir.DataType.FLOAT)
    )
    rows = ir.Value(name="rows", shape=ir.Shape([8, c]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([image, rows], [], nodes=[], opset_imports={"": 21}, name="kernel_probe")
    one = graph_tools.new_initializer(graph, "x_scale", np.array(1.0, np.float32))
    zero = graph_tools.new_initializer(graph, "x_zero", np.array(0, np.uint8))
    dequantized = []
    for value in (image, rows):
        q = ir.node("QuantizeLinear", [value, one, zero])
        dq = ir.node("DequantizeLinear", [q.outputs[0], one, zero])
        graph.extend([q, dq])
        dequantized.append(dq.outputs[0])
    x, r = dequantized
    _probe_layer(graph, x, "Conv", (16, c, 1, 1))
    _probe_layer(graph, x, "Conv", (16, c // 2, 3, 3), group=2)
    _probe_layer(graph, x, "Conv", (c, 1, 3, 3), group=c)
    _probe_layer(graph, r, "Gemm", (16, c), transB=1)
    feeds = {
        "image": np.full((1, c, 8, 8), 255, np.float32),
        "rows": np.full((8, c), 255, np.float32),
    }
    return ir.Model(graph, ir_version=10), feeds


@functools.cache
def kernels_saturate() -> bool:
    """Whether this CPU's u8s8 kernels in onnxruntime saturate int16 pair sums, measured
    on a small worst-case model (`_kernel_probe`, about 50 ms): where none of its layers
    does, no layer of any model can, and the per-layer check has nothing to find
    (VNNI, AMX and ARM's dot products accumulate in int32). Cached: the CPU stays."""
    model, feeds = _kernel_probe()
    errors, _ = kernel_errors(model, [feeds], threads=1)
    return not errors or max(errors.values()) > THRESHOLD


def guard(
    qmodel: ir.Model,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
) -> OverflowCheck:
    """Measure `qmodel`'s layers (`channel_errors`) and name those above `THRESHOLD`,
    with their channels above `CHANNEL_THRESHOLD`; the caller narrows those channels
    or stores the layers as uint8 in every Q/DQ model it builds (`store_uint8`).
    On a CPU whose kernels do not saturate (`kernels_saturate`) nothing is run: the
    check reports no layer probed."""
    if not kernels_saturate():
        return OverflowCheck(saturating_kernels=False)
    per_channel, samples = channel_errors(qmodel, batches, threads=threads)
    errors = {k: float(v.mean()) for k, v in per_channel.items()}
    over = [name for name, err in errors.items() if err > THRESHOLD]
    if over:
        logger.info(
            "%d of %d layers overflow int16 in this CPU's u8s8 kernels", len(over), len(errors)
        )
    return OverflowCheck(
        probed=len(errors),
        samples=samples,
        errors=errors,
        overflowing=over,
        channel_errors={k: per_channel[k] for k in over},
        uint8_weights=over,
    )
