"""Output-aware activation ranges: pick each tensor's clipping range by the error it
causes where it is used, not by its own histogram.

A histogram calibrator (percentile, MSE, entropy) judges a tensor by itself, so
every value counts the same. In a depthwise → project pair of MobileNetV2 a few
of the 960 channels reach 5.6 while the median channel stays under 0.7; the
99.99th percentile cuts at 2.5 and clips exactly the channels whose weights the
next layer relies on: that one tensor alone took the logit SQNR from 46 dB to
24 dB on its own (it held ~40% of the whole model's quantization noise).

`search_ranges` measures, on a few calibration samples, the error each
candidate range causes in the tensor's *readers*: for a reader that is linear in
it (Conv, Gemm, MatMul with a constant weight, GlobalAveragePool) the error is
that op applied to the quantization error e = x - fq(x) (no bias: the op is
linear in e); for an elementwise activation f (Sigmoid, Tanh, Relu, HardSigmoid,
HardSwish, and SiLU x * Sigmoid(x), whose Sigmoid and Mul both read x: one reader)
it is f(x) - f(x - e), the error where the activation's output is used (EfficientNet's
Swish and squeeze-excitation gates: 64 ranges that a percentile alone chose before).
A tensor with any other reader is not searched. The candidate with the least
summed squared error wins, after adding the clipping that the whole calibration set's
histogram saw beyond these samples (a rare large value they lack), carried to the
readers at the candidate's own measured gain: a range is never shrunk past values
the search could not judge. Tensors that reach a graph output unchanged
(`QuantPlan.covering`) are not searched: they keep every observed value.
Candidates run from 40% inside the calibrated range
to the observed extremes (`FRACTIONS`), clamped to the tensor's known bounds
(a Clip's interval). Readers are evaluated in torch with float weights.

Cost on MobileNetV2: one onnxruntime pass over `samples` inputs plus, per
tensor, one batched convolution of the candidates' errors, on at most
`MAX_BATCH_ELEMENTS` of each batch (4.3 s on 2 cores for 32 samples).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.calibrate import Histogram, run_with_outputs
from passes.quantize.params import activation_qparams
from passes.quantize.plan import QuantPlan
from passes.quantize.scratch import Scratch
from passes.quantize.spec import QuantSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# t < 0 shrinks the calibrated range toward zero by |t|; t > 0 moves each end the
# fraction t of the way to the observed extreme.
FRACTIONS = (-0.4, -0.2, 0.0, 0.125, 0.25, 0.5, 0.75, 1.0)

#: Elements of one batch a tensor's candidates are judged on: a larger batch keeps
#: samples spread evenly over it (at least one). MobileNetV2's 112x112 tensors then
#: see 1 of each 8 samples, its 7x7 ones all: the search took 4.3 s instead of 9.1 s
#: with the same held-out and validation SQNR (21.85 / 22.15 dB; 2^19 gave 22.02 on
#: validation).
MAX_BATCH_ELEMENTS = 1 << 20

Reader = Callable[["torch.Tensor"], "torch.Tensor"]  # a reader's linear map, in torch
#: how one reader sees the candidates' errors: (x of shape (n, ...), e of shape (k, n, ...))
#: -> the error in the reader's output, candidate axis first
Judge = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def candidates(
    base: tuple[float, float],
    extremes: tuple[float, float],
    bounds: tuple[float, float],
    symmetric: bool,
) -> list[tuple[float, float]]:
    """Candidate [lo, hi] ranges around the calibrated `base` (see FRACTIONS)."""
    lo0, hi0 = base
    lo_x, hi_x = min(extremes[0], lo0), max(extremes[1], hi0)
    out: list[tuple[float, float]] = []
    for t in FRACTIONS:
        if t <= 0:
            lo, hi = lo0 * (1 + t), hi0 * (1 + t)
        else:
            lo, hi = lo0 + t * (lo_x - lo0), hi0 + t * (hi_x - hi0)
        if symmetric:
            a = max(-lo, hi)
            lo, hi = -a, a
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        if hi - lo <= 0:
            continue
        pair = (float(lo), float(hi))
        if pair not in out:
            out.append(pair)
    return out


def _reader(node: ir.Node, index: int) -> Reader | None:
    """The linear map a reader applies to input `index`, in torch; None if not linear."""
    import torch
    import torch.nn.functional as F

    if graph_tools.is_std(node, "GlobalAveragePool"):
        return lambda e: e.mean(dim=tuple(range(2, e.dim())))
    if index == 0 and graph_tools.is_std(node, "Conv") and len(node.inputs) > 1:
        w = graph_tools.constant(node.inputs[1])
        if w is None or w.ndim not in (3, 4, 5):
            return None
        if graph_tools.attr_str(node, "auto_pad", "NOTSET") not in ("NOTSET", ""):
            return None
        spatial = w.ndim - 2
        pads = graph_tools.attr_ints(node, "pads", [0] * 2 * spatial)
        begin, end = pads[:spatial], pads[spatial:]
        conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
        weight = torch.from_numpy(np.array(w, dtype=np.float32))
        stride = graph_tools.attr_ints(node, "strides", [1] * spatial)
        dilation = graph_tools.attr_ints(node, "dilations", [1] * spatial)
        group = graph_tools.attr_int(node, "group", 1)
        torch_pad = [p for b, e in zip(reversed(begin), reversed(end), strict=True) for p in (b, e)]

        if begin == end:  # the common case: conv pads itself, no padded copy

            def apply(e: torch.Tensor) -> torch.Tensor:
                return conv(e, weight, None, stride, begin, dilation, group)

        else:

            def apply(e: torch.Tensor) -> torch.Tensor:
                return conv(F.pad(e, torch_pad), weight, None, stride, 0, dilation, group)

        return apply
    if graph_tools.is_std(node, "Gemm") and index == 0 and len(node.inputs) > 1:
        w = graph_tools.constant(node.inputs[1])
        if w is None or w.ndim != 2 or graph_tools.attr_int(node, "transA", 0):
            return None
        mat = torch.from_numpy(np.array(w, dtype=np.float32))
        mat = mat.t() if graph_tools.attr_int(node, "transB", 0) else mat
        alpha = graph_tools.attr_float(node, "alpha", 1.0)
        return lambda e: alpha * (e @ mat)
    if graph_tools.is_std(node, "MatMul") and index == 0 and len(node.inputs) > 1:
        w = graph_tools.constant(node.inputs[1])
        if w is None or w.ndim != 2:
            return None
        mat = torch.from_numpy(np.array(w, dtype=np.float32))
        return lambda e: e @ mat
    return None


def _activation(node: ir.Node) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """An elementwise activation reading its input 0, in torch; None if not one of them."""
    import torch
    import torch.nn.functional as F

    if graph_tools.is_std(node, "Sigmoid"):
        return torch.sigmoid
    if graph_tools.is_std(node, "Tanh"):
        return torch.tanh
    if graph_tools.is_std(node, "Relu"):
        return torch.relu
    if graph_tools.is_std(node, "HardSwish"):
        return F.hardswish
    if graph_tools.is_std(node, "HardSigmoid"):
        alpha = graph_tools.attr_float(node, "alpha", 0.2)
        beta = graph_tools.attr_float(node, "beta", 0.5)
        return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)
    return None


def _silu_gate(node: ir.Node, index: int) -> ir.Node | None:
    """The Sigmoid of a Mul(x, Sigmoid(x)) (SiLU/Swish) that reads x at `index`, else None."""
    if not graph_tools.is_std(node, "Mul") or len(node.inputs) != 2 or index not in (0, 1):
        return None
    other = node.inputs[1 - index]
    gate = other.producer() if other is not None else None
    if gate is None or not graph_tools.is_std(gate, "Sigmoid"):
        return None
    if not gate.inputs or gate.inputs[0] is not node.inputs[index]:
        return None
    return gate if len(list(gate.outputs[0].uses())) == 1 else None


def _judges(edges: list[tuple[ir.Node, int]]) -> list[Judge] | None:
    """How each reader sees a candidate's error e of x: a linear reader L(e); an
    elementwise activation f(x) - f(x - e); a SiLU (x * Sigmoid(x), read by both the
    Sigmoid and the Mul) as one reader. None if some reader is none of these."""
    import torch.nn.functional as F

    gates = {id(g) for node, idx in edges if (g := _silu_gate(node, idx)) is not None}
    out: list[Judge] = []
    for node, idx in edges:
        if id(node) in gates:
            continue  # the SiLU's Sigmoid: judged with its Mul
        if _silu_gate(node, idx) is not None:
            out.append(lambda x, e: F.silu(x) - F.silu(x - e))
            continue
        linear = _reader(node, idx)
        if linear is not None:
            out.append(lambda x, e, f=linear: f(e.flatten(0, 1)))  # type: ignore[misc]  # default arg binds this loop's f
            continue
        act = _activation(node) if idx == 0 else None
        if act is None:
            return None
        out.append(lambda x, e, f=act: f(x) - f(x - e))  # type: ignore[misc]  # default arg binds f
    return out


class _Errors:
    """Summed squared reader-output error of every candidate range of one tensor."""

    def __init__(
        self,
        ranges: list[tuple[float, float]],
        readers: list[Judge],
        spec: QuantSpec,
        scratch: Scratch | None = None,
    ) -> None:
        self.scratch = scratch or Scratch()  # the candidates' errors: one buffer for all
        self.ranges = ranges
        self.readers = readers
        self.params = [activation_qparams(lo, hi, spec) for lo, hi in ranges]
        self.qmin, self.qmax = spec.activation_qrange
        self.sums = np.zeros(len(ranges))  # reader-output error
        self.raw = np.zeros(len(ranges))  # the tensor's own error
        self.clipped = np.zeros(len(ranges))  # its clipping part
        self.elements = 0

    def update(self, x: np.ndarray) -> None:
        """Add one batch (past `MAX_BATCH_ELEMENTS`, a subset of its samples): every
        candidate's error is computed at once, as a leading candidate axis (k, n, ...),
        in float32 with in-place ops; sums use torch's pairwise float32 reduction
        (relative error ~1e-7, far below the gaps ranked)."""
        import torch

        if x.ndim and x.shape[0] > 1 and x.size > MAX_BATCH_ELEMENTS:
            keep = max(1, MAX_BATCH_ELEMENTS // (x.size // x.shape[0]))
            x = x[:: -(-x.shape[0] // keep)]  # samples spread over the batch
        t = torch.from_numpy(np.array(x, dtype=np.float32))
        if t.dim() == 4:  # oneDNN's NHWC kernels: MobileNetV2's depthwise readers 3-6x faster
            t = t.contiguous(memory_format=torch.channels_last)
        k = len(self.params)
        shape = (k,) + (1,) * t.dim()
        scale = torch.tensor([float(s) for s, _ in self.params], dtype=torch.float32).view(shape)
        # (k, n, ...): the candidates along a new leading axis, each laid out as t is
        if t.dim() == 4:
            n, c, h, w = t.shape
            e = self.scratch.take((k, n, h, w, c)).permute(0, 1, 4, 2, 3)
        else:
            e = self.scratch.take((k, *t.shape))
        torch.div(t, scale, out=e)
        # fq(t) = (clamp(round(t/s) + zp, qmin, qmax) - zp) * s, with zp folded into the bounds
        e.round_()
        for i, (_, zp) in enumerate(self.params):  # a scalar clamp is 7x a broadcast one
            e[i].clamp_(self.qmin - float(zp), self.qmax - float(zp))
        e.mul_(scale)
        torch.sub(t, e, out=e)  # e = t - fq(t)
        self._add_clipping(t)
        self.elements += t.numel()
        with torch.inference_mode():
            for reader in self.readers:
                self.sums += _energies(reader(t, e), k)
        self.raw += _energies(e, k)  # last: squares e in place

    def _add_clipping(self, t: torch.Tensor) -> None:
        """Each candidate's own clipping error, from the few values beyond its ends."""
        above = t[t > min(hi for _, hi in self.ranges)].double()
        below = t[t < max(lo for lo, _ in self.ranges)].double()
        for i, (lo, hi) in enumerate(self.ranges):
            over = (above - hi).clamp_min(0.0)
            under = (lo - below).clamp_min(0.0)
            self.clipped[i] += float(over.square().sum() + under.square().sum())

    def scores(self, hist: Histogram | None = None) -> np.ndarray:
        """Each candidate's expected reader-output error on the searched samples: the
        measured one, plus the clipping the calibration histogram saw beyond what these
        samples hold (a rare large value the search samples lack), carried to the
        readers at the candidate's measured gain (reader error / own error)."""
        if hist is None or not hist.count or not self.elements:
            return self.sums
        out = self.sums.copy()
        per_element = self.elements / hist.count
        for i, (lo, hi) in enumerate(self.ranges):
            unseen = hist.clip_error(lo, hi) * per_element - self.clipped[i]
            if unseen > 0:
                gain = self.sums[i] / self.raw[i] if self.raw[i] > 0 else 1.0
                out[i] += gain * unseen
        return out

    def best(self, hist: Histogram | None = None) -> tuple[float, float]:
        return self.ranges[int(np.argmin(self.scores(hist)))]


def _energies(y: torch.Tensor, k: int) -> np.ndarray:
    """Sum of squares per candidate of y (candidate axis first, or candidates x samples
    flattened into it), squaring y in place; any memory layout."""
    if y.shape[0] != k:
        y = y.unflatten(0, (k, -1))
    return y.square_().sum(dim=tuple(range(1, y.dim()))).double().numpy()


def search_ranges(
    model: ir.Model,
    plan: QuantPlan,
    spec: QuantSpec,
    ranges: Mapping[str, tuple[float, float]],
    stats: Mapping[str, Histogram],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """`ranges` with each planned activation's range replaced by the candidate whose
    quantization error hurts its readers least on `batches` (see module docstring).
    Tensors that share another's range, or have no statistics, keep theirs."""
    import torch

    searched: dict[str, _Errors] = {}
    scratch = Scratch()
    for name, site in plan.activations.items():
        if name in plan.share or name not in ranges or name not in stats:
            continue
        if name in plan.covering:
            continue  # reaches a graph output unchanged: it keeps every observed value
        producer = site.value.producer()
        if producer is not None and graph_tools.is_std(producer, "Add", "Sum"):
            continue  # the residual stream: see the module docstring
        h = stats[name]
        if not np.isfinite(h.min) or not np.isfinite(h.max):
            continue
        cands = candidates(ranges[name], (h.min, h.max), site.bounds, spec.activation_symmetric)
        if len(cands) < 2:
            continue
        readers = _judges(site.edges)
        if not readers:
            continue  # read by an op that carries the error on unchanged (a residual Add)
        searched[name] = _Errors(cands, readers, spec, scratch)
    if not searched:
        return dict(ranges)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        run_with_outputs(
            model,
            list(searched),
            batches,
            lambda n, a: searched[n].update(a),
            threads=threads,
            max_batch=8,
            progress=progress,
        )
    finally:
        torch.set_num_threads(old_threads)
    out = dict(ranges)
    for name, errors in searched.items():
        if errors.sums.any():
            out[name] = errors.best(stats[name])
    moved = sum(out[n] != ranges[n] for n in searched)
    logger.info("range search moved %d of %d activation ranges", moved, len(searched))
    return out
