"""Quantization parameters: ranges → (scale, zero point), weights → int8, biases → int32.

Math (ONNX QuantizeLinear: q = saturate(round_half_even(x / scale) + zero_point)):

- asymmetric activation range [lo, hi] (widened to contain 0, so 0 is exact):
  scale = (hi - lo) / (qmax - qmin), zero_point = qmin - round(lo / scale);
- symmetric: scale = max(|lo|, |hi|) / qmax_sym, zero_point = 0 (qmax_sym = 127);
- weights, symmetric per output channel c: scale[c] = max|W[c]| / 127 (63 with
  reduce_range), q = round(W / scale) clipped to ±127; an all-zero channel gets scale 1;
- bias of Conv/Gemm: scale[c] = x_scale * w_scale[c], zero point 0, int32.

Scales are float32. A scale whose top representable value would exceed `hi` in
float32 arithmetic is nudged down one ulp, so a range clamped to an activation's
interval (Clip(0, 6)) really lies inside it — onnxruntime only removes a Clip
before a QuantizeLinear when the quantized range fits inside the Clip's.
"""

from __future__ import annotations

import numpy as np

from passes.quantize.spec import QuantSpec

_TINY = np.float32(1e-8)


def activation_qparams(lo: float, hi: float, spec: QuantSpec) -> tuple[np.float32, np.integer]:
    """(scale, zero point) for an activation observed in [lo, hi] under `spec`."""
    qmin, qmax = spec.activation_qrange
    zp_dtype = np.uint8 if spec.activation_dtype == "uint8" else np.int8
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite")
    if spec.activation_symmetric:
        amax = max(-lo, hi)
        scale = np.float32(max(amax / qmax, float(_TINY)))
        return scale, zp_dtype(0)
    scale = np.float32(max((hi - lo) / (qmax - qmin), float(_TINY)))
    zp = int(np.clip(qmin - np.round(lo / float(scale)), qmin, qmax))
    # Keep the top of the quantized range inside [lo, hi] as float32 computes it.
    if hi > 0 and zp < qmax:
        if np.float32(qmax - zp) * scale > np.float32(hi):
            scale = np.float32(hi / (qmax - zp))
        while np.float32(qmax - zp) * scale > np.float32(hi):
            scale = np.nextafter(scale, np.float32(0))
    return np.float32(scale), zp_dtype(zp)


def quantize_weight(
    w: np.ndarray, axis: int | None, spec: QuantSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (q int8 array, float32 scales of shape (C,) or ())."""
    qmax = spec.weight_qmax
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.float32(np.abs(w).max()) if w.size else np.float32(0)
        scale = np.float32(amax / qmax) if amax > 0 else np.float32(1.0)
        q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
        return q, np.asarray(scale, dtype=np.float32)
    axis = axis % w.ndim
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    peaks = np.abs(w).max(axis=reduce) if w.size else np.zeros(w.shape[axis], np.float32)
    scales = np.where(peaks > 0, peaks / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scales


def dequantize_weight(
    q: np.ndarray, scale: np.ndarray, axis: int | None, zero_point: np.ndarray | None = None
) -> np.ndarray:
    """(q - zero_point) * scale in float32, per `axis` when the scale has one."""
    x = q.astype(np.float32)
    if axis is None or scale.ndim == 0:
        return (x if zero_point is None else x - zero_point.astype(np.float32)) * scale
    shape = [1] * q.ndim
    shape[axis % q.ndim] = -1
    if zero_point is not None:
        x = x - zero_point.astype(np.float32).reshape(shape)
    return x * scale.reshape(shape)


def quantize_bias(
    b: np.ndarray, x_scale: np.float32, w_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale x_scale * w_scale (per channel or scalar)."""
    scale = (np.float32(x_scale) * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        scale = np.full(b.shape, scale.reshape(()), dtype=np.float32) if b.ndim == 1 else scale
    q = np.round(b.astype(np.float64) / scale.astype(np.float64))
    q = np.clip(q, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    return q, scale
