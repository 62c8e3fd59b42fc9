"""Data-aware weight rounding (GPTQ / Optimal Brain Quantization, Frantar et al. 2022),
for the int8 per-channel weights of Conv, Gemm and MatMul.

Round-to-nearest minimizes each weight's own error; what matters is the layer's
output error. For a row w of a layer (one output channel; K = C_in/group * kh * kw
inputs) with input patches x, the expected output error of a rounding q is

    E[((q * s - w) . x)^2] = (q s - w)^T H (q s - w),   H = E[x x^T]

with the per-channel scale s fixed by max|w| / 127. GPTQ rounds the K inputs one
at a time and spreads each rounding error over the inputs not yet rounded, using
the Cholesky factor of H^-1 (damped by `damp` * mean(diag H)). MobileNetV2 shows
why it matters: its first depthwise filters are edge detectors whose 9 taps sum
to almost zero, so round-to-nearest can change a filter's response to a flat
patch by 100% while its weights move by 0.5%; on smooth image regions that
error is all the layer outputs. H of a depthwise filter is dominated by the
all-ones direction, and GPTQ keeps the taps' sum.

H is accumulated from the float model's input of each layer (im2col patches via
torch's unfold, one (K, K) matrix per group; a depthwise Conv has one 9x9 per
channel), in the same pass as calibration. `round_weights` returns, per weight
initializer, the scale and the rounded integers' float values q * s; the Q/DQ
pass then stores exactly those integers.

Refuses (keeps round-to-nearest): ConvTranspose, weights that are not float
constants, layers whose input never arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.params import quantize_weight
from passes.quantize.plan import QuantPlan
from passes.quantize.scratch import Scratch
from passes.quantize.spec import QuantSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: layers rounded at once (`_round_weights`): MobileNetV2 2.4-2.9 s -> 2.0 s on 2 cores
ROUNDING_THREADS = 2


@dataclass
class _Layer:
    node: ir.Node
    input: str
    weight: ir.Value
    kind: str  # conv | gemm | matmul
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1
    hessian: np.ndarray | None = None
    rows: int = 0
    columns: int = 0  # patches summed into the hessian


#: Largest Hessian (float64 bytes, all groups) a layer may accumulate; GPTQ needs about
#: three times that while it runs. A layer over it keeps round-to-nearest, with a note.
MAX_HESSIAN_BYTES = 1 << 30


def hessian_bytes(layer: _Layer) -> int:
    """Bytes of a layer's float64 Hessian: group x K x K, K its inputs per output."""
    w = graph_tools.constant(layer.weight)
    if w is None:
        return 0
    if layer.kind == "conv":
        k = int(np.prod(w.shape[1:]))
    elif layer.kind == "gemm" and graph_tools.attr_int(layer.node, "transB", 0):
        k = int(w.shape[1])
    else:
        k = int(w.shape[0])
    return layer.group * k * k * 8


class HessianCollector:
    """Accumulates H = sum x x^T over layer inputs; feed it with `visit(name, array)`.

    A layer whose Hessian would take more than `max_bytes` is not collected (VGG-19's
    first FC layer reads 25088 inputs: 5 GB in float64, four times that while GPTQ
    runs); it keeps round-to-nearest and `skipped` says why, by node name."""

    def __init__(
        self,
        plan: QuantPlan,
        *,
        max_columns: int = 8192,
        nodes: set[str] | None = None,
        max_bytes: int | None = None,  # None: MAX_HESSIAN_BYTES
    ) -> None:
        budget = MAX_HESSIAN_BYTES if max_bytes is None else max_bytes
        self.max_columns = max_columns
        self._scratch: Scratch | None = Scratch()  # the depthwise patches' buffer
        self.layers: list[_Layer] = []
        self.skipped: dict[str, str] = {}
        for site in plan.weights:
            node = site.node
            if nodes is not None and node.name not in nodes:
                continue
            x = node.inputs[0] if site.index == 1 else None
            if x is None or not x.name or site.axis is None:
                continue
            w = node.inputs[site.index]
            arr = graph_tools.constant(w)
            if w is None or arr is None:
                continue
            if graph_tools.is_std(node, "Conv") and arr.ndim in (3, 4):
                k = tuple(arr.shape[2:])
                nd = len(k)
                pads = (
                    tuple(node.attributes["pads"].as_ints())
                    if "pads" in node.attributes
                    else (0,) * 2 * nd
                )
                auto_pad = (
                    node.attributes["auto_pad"].as_string()
                    if "auto_pad" in node.attributes
                    else "NOTSET"
                )
                if auto_pad not in ("NOTSET", "VALID"):
                    continue
                self.layers.append(
                    _Layer(
                        node,
                        x.name,
                        w,
                        "conv",
                        k,
                        tuple(node.attributes["strides"].as_ints())
                        if "strides" in node.attributes
                        else (1,) * nd,
                        pads,
                        tuple(node.attributes["dilations"].as_ints())
                        if "dilations" in node.attributes
                        else (1,) * nd,
                        graph_tools.attr_int(node, "group", 1),
                    )
                )
            elif (
                graph_tools.is_std(node, "Gemm")
                and arr.ndim == 2
                and not graph_tools.attr_int(node, "transA", 0)
            ):
                self.layers.append(_Layer(node, x.name, w, "gemm"))
            elif graph_tools.is_std(node, "MatMul") and arr.ndim == 2:
                self.layers.append(_Layer(node, x.name, w, "matmul"))
        for layer in list(self.layers):
            size = hessian_bytes(layer)
            if size > budget:
                self.layers.remove(layer)
                self.skipped[layer.node.name or ""] = (
                    f"GPTQ skipped, rounded to nearest: its Hessian would take "
                    f"{size / 2**30:.2f} GiB (budget {budget / 2**30:.2f} GiB)"
                )
                logger.info("%s: %s", layer.node.name, self.skipped[layer.node.name or ""])
        self.by_input: dict[str, list[_Layer]] = {}
        for layer in self.layers:
            self.by_input.setdefault(layer.input, []).append(layer)

    @property
    def names(self) -> list[str]:
        return list(self.by_input)

    def visit(self, name: str, x: np.ndarray) -> None:
        for layer in self.by_input.get(name, ()):
            got = _patch_moments(layer, x, self.max_columns, self._scratch)
            if got is not None:
                h, cols = got
                layer.hessian = h if layer.hessian is None else layer.hessian + h
                layer.rows += 1
                layer.columns += cols

    def finish(self) -> None:
        """Release the patch buffer once every batch has been visited."""
        self._scratch = None


def _patch_moments(
    layer: _Layer, x: np.ndarray, max_columns: int, scratch: Scratch | None = None
) -> tuple[np.ndarray, int] | None:
    """(sum over a strided subset of at most `max_columns` input patches of x x^T, one
    (K, K) matrix per group; the number of patches). Inputs past 1e15 (random data
    through an unnormalized VGG) are scaled down first and the sums scaled back in
    float64: their squares overflow float32. A batch with inf or NaN adds nothing."""
    import torch

    arr = np.ascontiguousarray(x, dtype=np.float32)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    peak = float(t.abs().max()) if t.numel() else 0.0
    if not np.isfinite(peak):
        return None
    norm = peak if peak > 1e15 else 1.0
    got = _moments(layer, t / norm if norm != 1.0 else t, max_columns, scratch)
    if got is None or norm == 1.0:
        return got
    return got[0] * (norm * norm), got[1]


def _moments(
    layer: _Layer, t: torch.Tensor, max_columns: int, scratch: Scratch | None = None
) -> tuple[np.ndarray, int] | None:
    import torch
    import torch.nn.functional as F

    if layer.kind != "conv":
        if t.ndim < 2:
            return None
        t = t.reshape(-1, t.shape[-1])
        t = t[:: max(1, -(-t.shape[0] // max_columns))]
        return (t.T @ t).double().numpy()[None], int(t.shape[0])
    nd = len(layer.kernel)
    if nd == 1:  # treat 1-D as 2-D with height 1
        t = t.unsqueeze(2)
        kernel, strides, dil = (1, *layer.kernel), (1, *layer.strides), (1, *layer.dilations)
        pads = (0, 0, layer.pads[0], layer.pads[1])  # (top, bottom, left, right): width only
    else:
        kernel, strides, dil = layer.kernel, layer.strides, layer.dilations
        pads = (
            layer.pads[0],
            layer.pads[2],
            layer.pads[1],
            layer.pads[3],
        )  # (top, bottom, left, right)
    g = layer.group
    n, c = t.shape[0], t.shape[1]
    k = (c // g) * int(np.prod(kernel))
    if g == c and g > 1:
        return _depthwise_moments(t, kernel, strides, dil, pads, max_columns, scratch)
    total = None
    count = 0
    # a few samples at a time keeps the im2col buffer small; columns are strided evenly
    per = max(1, min(n, (1 << 24) // max(1, c * int(np.prod(kernel)) * t.shape[2] * t.shape[3])))
    for start in range(0, n, per):
        chunk = t[start : start + per]
        if kernel == (1, 1) and strides == (1, 1) and not any(pads):
            cols = chunk.reshape(chunk.shape[0], c, -1)
        else:
            top, bottom, left, right = pads
            chunk = F.pad(chunk, (left, right, top, bottom))
            cols = F.unfold(chunk, kernel, dilation=dil, stride=strides)  # (n, C*k, L)
        length = cols.shape[2]
        step = max(1, -(-length * n // max_columns))
        cols = cols[:, :, ::step]
        cols = cols.reshape(cols.shape[0], g, k, -1).permute(1, 2, 0, 3).reshape(g, k, -1)
        count += cols.shape[2]
        h = torch.bmm(cols, cols.transpose(1, 2)).double()
        total = h if total is None else total + h
    return None if total is None else (total.numpy(), count)


def _depthwise_moments(
    t: torch.Tensor,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dil: tuple[int, ...],
    pads: tuple[int, ...],
    max_columns: int,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, int]:
    """Per-channel (k, k) patch moments of a depthwise Conv from shifted strided views.
    The padding is implicit: each view's rows and columns inside the input are copied
    once into a (C, k, positions) buffer and the rest of it zeroed (padding the whole
    input first copied every element, though only the sampled positions are read)."""
    import torch

    top, bottom, left, right = pads
    n, c, h, w = t.shape
    kh, kw = kernel
    ho = (h + top + bottom - dil[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + left + right - dil[1] * (kw - 1) - 1) // strides[1] + 1
    # subsample output positions evenly so that n * positions stays near max_columns
    step = max(1, int(np.sqrt(n * ho * wo / max_columns)))
    rows, width = len(range(0, ho, step)), len(range(0, wo, step))
    shape = (c, kh * kw, n * rows * width)
    cols = scratch.take(shape) if scratch is not None else torch.empty(shape, dtype=t.dtype)
    for i in range(kh):
        ys = _inside(i * dil[0] - top, strides[0] * step, rows, h)
        for j in range(kw):
            xs = _inside(j * dil[1] - left, strides[1] * step, width, w)
            slot = cols[:, i * kw + j].view(c, n, rows, width)
            if ys is None or xs is None:
                slot.zero_()  # this shift sees only padding
                continue
            (r0, r1, y_rows), (c0, c1, x_cols) = ys, xs
            slot[:, :, r0:r1, c0:c1].copy_(t[:, :, y_rows, x_cols].permute(1, 0, 2, 3))
            slot[:, :, :r0].zero_()  # the padding around it
            slot[:, :, r1:].zero_()
            slot[:, :, r0:r1, :c0].zero_()
            slot[:, :, r0:r1, c1:].zero_()
    return torch.bmm(cols, cols.transpose(1, 2)).double().numpy(), int(cols.shape[2])


def _inside(offset: int, stride: int, count: int, size: int) -> tuple[int, int, slice] | None:
    """For the positions offset + m * stride (m < count) along an axis of length `size`:
    the range [m0, m1) of those inside it and the slice that selects them; None if none
    is."""
    m0 = -(offset // stride) if offset < 0 else 0
    m1 = min(count, (size - 1 - offset) // stride + 1) if offset <= size - 1 else 0
    if m1 <= m0:
        return None
    first = offset + m0 * stride
    return m0, m1, slice(first, first + (m1 - m0 - 1) * stride + 1, stride)


def round_weights(
    collector: HessianCollector,
    spec: QuantSpec,
    *,
    damp: float = 0.01,
    progress: Callable[[int, int], None] | None = None,
    layers: Collection[str] | None = None,
    row_qmax: Mapping[str, np.ndarray] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{weight name: (rounded float weight q*s, per-channel scale s)} for every layer with H
    (only the nodes named in `layers`, when given); `progress(layers done, layers to round)`
    as they finish. `row_qmax` gives a node's own largest integer per output channel (7-bit
    channels where its int8 kernel overflows, `overflow.py`), its scale following.

    BLAS runs single-threaded here: the matrices are small and many, and a
    multi-threaded OpenBLAS next to torch's and onnxruntime's thread pools on a
    2-core machine was measured 10x slower.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _round_weights(collector, spec, damp, progress, layers, row_qmax or {})


def _round_weights(
    collector: HessianCollector,
    spec: QuantSpec,
    damp: float,
    progress: Callable[[int, int], None] | None,
    only: Collection[str] | None,
    row_qmax: Mapping[str, np.ndarray],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The layers two at a time: LAPACK and numpy's loops release the GIL, so the second
    core works while the first one's Python runs (each layer is rounded alone, with
    single-threaded BLAS: the same numbers in any order)."""
    todo: list[_Layer] = []
    names: set[str] = set()
    for layer in collector.layers:
        if only is not None and layer.node.name not in only:
            continue
        if layer.hessian is None or not layer.weight.name or layer.weight.name in names:
            continue
        if not np.all(np.isfinite(layer.hessian)):
            collector.skipped[layer.node.name or ""] = (
                "GPTQ skipped, rounded to nearest: its input's second moments overflow float64"
            )
            continue
        names.add(layer.weight.name)
        todo.append(layer)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with ThreadPoolExecutor(ROUNDING_THREADS) as pool:
        rounded = pool.map(lambda la: _round_layer(la, spec, damp, row_qmax), todo)
        for i, (layer, result) in enumerate(zip(todo, rounded, strict=True)):
            if progress is not None:
                progress(i, len(todo))
            out[layer.weight.name or ""] = result
    if progress is not None:
        progress(len(todo), len(todo))
    return out


def _round_layer(
    layer: _Layer, spec: QuantSpec, damp: float, row_qmax: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One layer's GPTQ-rounded float weight and its per-channel scale."""
    assert layer.hessian is not None
    w = graph_tools.constant(layer.weight)
    assert w is not None
    axis = (
        0
        if layer.kind == "conv"
        or (layer.kind == "gemm" and graph_tools.attr_int(layer.node, "transB", 0))
        else 1
    )
    _, scale = quantize_weight(w, axis, spec)
    qmax: int | np.ndarray = spec.weight_qmax
    rows_q = row_qmax.get(layer.node.name or "")
    if rows_q is not None and rows_q.size == scale.size:
        scale = (scale * (spec.weight_qmax / rows_q)).astype(scale.dtype)
        qmax = rows_q
    w_rows = np.moveaxis(w.astype(np.float64), axis, 0)
    shape_rows = w_rows.shape
    w2 = w_rows.reshape(shape_rows[0], -1)
    g = layer.hessian.shape[0]
    rows_per_group = w2.shape[0] // g
    wg = w2.reshape(g, rows_per_group, -1)
    sg = scale.astype(np.float64).reshape(g, rows_per_group)
    if isinstance(qmax, np.ndarray):
        qmax = qmax.reshape(g, rows_per_group)
    q = gptq(wg, layer.hessian, sg, qmax, damp=damp)
    rounded = (q * sg[..., None]).reshape(shape_rows)
    return np.moveaxis(rounded, 0, axis).astype(w.dtype), scale


def gptq(
    w: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
    qmax: int | np.ndarray,
    *,
    damp: float = 0.01,
    block: int = 128,
) -> np.ndarray:
    """Integers q (G, R, K) for weights w (G, R, K), Hessians h (G, K, K), scales (G, R);
    `qmax` the largest integer, one or per row (G, R)."""
    g, r, k = w.shape
    h = h.astype(np.float64).copy()
    w = w.astype(np.float64).copy()
    diag = np.einsum("gii->gi", h)
    dead = diag <= 0
    # inputs that never fire: their weights do not matter, keep them out of the solve
    for gi in range(g):
        h[gi][dead[gi], dead[gi]] = 1.0
    mean_diag = np.einsum("gii->gi", h).mean(axis=1)
    h += (damp * mean_diag)[:, None, None] * np.eye(k)[None]
    try:
        hinv = np.linalg.inv(h)
        u = np.linalg.cholesky(hinv).transpose(0, 2, 1)  # upper: hinv = u^T u
    except np.linalg.LinAlgError:
        logger.debug("GPTQ: H not positive definite; rounding to nearest")
        bound = qmax[..., None] if isinstance(qmax, np.ndarray) else qmax
        return np.clip(np.round(w / scale[..., None]), -bound, bound)
    q = np.empty_like(w)
    s = scale  # (G, R)
    for b0 in range(0, k, block):  # lazy batch updates (GPTQ section 3, "Step 2")
        b1 = min(k, b0 + block)
        err_block = np.empty((g, r, b1 - b0))
        for j in range(b0, b1):
            col = w[:, :, j]
            qj = np.clip(np.round(col / s), -qmax, qmax)
            q[:, :, j] = qj
            err = (col - qj * s) / u[:, j, j][:, None]
            err_block[:, :, j - b0] = err
            if j + 1 < b1:
                w[:, :, j + 1 : b1] -= err[:, :, None] * u[:, None, j, j + 1 : b1]
        if b1 < k:
            w[:, :, b1:] -= np.matmul(err_block, u[:, b0:b1, b1:])
    return q
