"""Fake quantization in torch that computes what the exported Q/DQ graph computes.

ONNX semantics (what onnxruntime runs when it executes Q/DQ literally):

    q = saturate(round_half_even(x / scale) + zero_point)      QuantizeLinear
    y = (q - zero_point) * scale                                DequantizeLinear

with `saturate` to the storage type (uint8 [0, 255], int8 [-128, 127]) and a
*division* by the scale. torch's fused fake-quant kernels multiply by the
reciprocal instead, which rounds differently for about 1 value in 10^5 near a
half step; so in eval mode every quantizer here uses `quantize_dequantize`
(division, `torch.round` is half-to-even), and only training uses the fused
kernels (their gradients: straight-through inside the range, zero outside, and
LSQ's scale gradient). PTQ's parameter math (`passes.quantize.params`) is
reproduced bit for bit:

- activations, per tensor: `ActivationQuantizer` holds a scale (an
  `nn.Parameter`, learned LSQ-style when `learn_scale`: the gradient of the
  scale is multiplied by g = 1/sqrt(n * qmax), n the elements of one sample)
  and a fixed integer zero point. The scale never exceeds `max_scale`, the
  largest scale whose range still lies inside the Relu/Clip interval that
  produced the tensor (PTQ clamps ranges to that interval, so must we). Its
  `range()` is the [lo, hi] that `activation_qparams` maps back to exactly this
  scale and zero point;
- weights, symmetric per output channel (or per tensor): q = clip(round(W / s),
  ±qmax) with s[c] = max|W[c]| / qmax (1 for an all-zero channel) taken when
  quantization starts, or PTQ's own scales, then *fixed* while the weights
  train (`QuantLayer.fix_weight_scale`); the export hands exactly these scales
  to PTQ's Q/DQ pass. (Per-tensor weights keep max|W| / qmax, recomputed, which
  is what that pass computes for them.);
- biases (int32, when the spec asks): scale = x_scale * w_scale in float32,
  q = round(b / scale) in float64, clipped to int32.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = [
    "WEIGHTED",
    "ActivationQuantizer",
    "QuantLayer",
    "bias_fake_quant",
    "quantize_dequantize",
    "weight_fake_quant",
    "weight_scale",
]

_TINY = 1e-8  # passes.quantize.params._TINY: the smallest activation scale
_INT32 = (-(2**31), 2**31 - 1)
_STORAGE = {"uint8": (0, 255), "int8": (-128, 127)}


def quantize_dequantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """ONNX QuantizeLinear → DequantizeLinear, exactly (no gradient tricks).

    `scale` and `zero_point` are scalars, or 1-D along `axis` for per-channel.
    """
    if axis is not None and scale.dim() == 1:
        shape = [1] * x.dim()
        shape[axis % x.dim()] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def weight_scale(w: torch.Tensor, axis: int | None, qmax: int) -> torch.Tensor:
    """max|W| / qmax per channel along `axis` (or per tensor), 1 where the max is 0; no gradient."""
    w = w.detach()
    if axis is None:
        amax = w.abs().max()
    else:
        dims = [d for d in range(w.dim()) if d != axis % w.dim()]
        amax = w.abs().amax(dim=dims)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def weight_fake_quant(w: torch.Tensor, axis: int | None, qmax: int, *, exact: bool) -> torch.Tensor:
    """Symmetric int8 fake quantization of a weight; `exact` for eval, else straight-through."""
    return _weight_fq(w, weight_scale(w, axis, qmax), axis, qmax, exact)


def bias_fake_quant(
    b: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, *, exact: bool
) -> torch.Tensor:
    """int32 bias with scale x_scale * w_scale (`passes.quantize.params.quantize_bias`)."""
    scale = x_scale.detach().reshape(()) * w_scale.detach()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(b.detach().double() / scale.double()).clamp(*_INT32)
    bq = q.float() * scale
    return bq if exact else b + (bq - b).detach()


class ActivationQuantizer(nn.Module):
    """Per-tensor fake quantization of one activation (and of every tensor sharing its range).

    Args:
        dtype: ``uint8`` or ``int8`` (the Q/DQ storage type).
        symmetric: zero point fixed at 0 (the spec's `activation_symmetric`).
        qrange: the spec's `activation_qrange`: the integer range the scale is
            computed for (symmetric int8 uses ±127); values saturate to the
            storage type's full range, as QuantizeLinear does.
        bounds: the interval of the Relu/Clip that produced the tensor.
        learn_scale: train the scale (LSQ); otherwise it stays at its calibrated value.
    """

    zero_point: torch.Tensor  # a buffer

    def __init__(
        self,
        dtype: str,
        *,
        symmetric: bool,
        qrange: tuple[int, int],
        bounds: tuple[float, float] = (-math.inf, math.inf),
        learn_scale: bool = True,
    ) -> None:
        super().__init__()
        if dtype not in _STORAGE:
            raise ValueError(f"activation dtype must be uint8 or int8, got {dtype!r}")
        self.dtype = dtype
        self.symmetric = symmetric
        self.qrange = (int(qrange[0]), int(qrange[1]))
        self.storage = _STORAGE[dtype]
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.learn_scale = learn_scale
        self.scale = nn.Parameter(torch.ones(1), requires_grad=learn_scale)
        self.register_buffer("zero_point", torch.zeros(1))

    def extra_repr(self) -> str:
        return (
            f"{self.dtype}, symmetric={self.symmetric}, scale={float(self.scale.detach()):.6g}, "
            f"zero_point={int(self.zero_point)}, learn_scale={self.learn_scale}"
        )

    # -- parameters -------------------------------------------------------------------

    def set_params(self, scale: float, zero_point: int) -> None:
        """Set the scale and zero point (PTQ's `activation_qparams` of a calibrated range)."""
        with torch.no_grad():
            self.scale.fill_(float(scale))
            self.zero_point.fill_(float(zero_point))

    def max_scale(self) -> float:
        """The largest float32 scale whose range [lo, hi] stays inside `bounds` (inf if unbounded)."""
        lo_b, hi_b = self.bounds
        zp = float(self.zero_point)
        qlo, qhi = self.qrange
        limits: list[tuple[float, float]] = []  # (bound, number of steps from 0 to it)
        if self.symmetric:
            amax = max(-lo_b, hi_b)
            if math.isfinite(amax):
                limits.append((amax, qhi))
        else:
            if math.isfinite(hi_b) and zp < qhi:
                limits.append((hi_b, qhi - zp))
            if math.isfinite(lo_b) and lo_b < 0 and zp > qlo:
                limits.append((-lo_b, zp - qlo))
        best = math.inf
        for bound, steps in limits:
            s = np.float32(bound / steps)
            while float(s) * steps > bound:  # round down: the range must not poke out
                s = np.nextafter(s, np.float32(0))
            best = min(best, float(s))
        return best

    def effective_scale(self) -> torch.Tensor:
        """The scale in use: positive and within `max_scale()` (differentiable)."""
        return torch.clamp(self.scale, min=_TINY, max=self.max_scale())

    def range(self) -> tuple[float, float]:
        """[lo, hi] that `passes.quantize.params.activation_qparams` maps to this scale/zero point."""
        s = float(self.effective_scale().detach())
        if self.symmetric:
            return (-self.qrange[1] * s, self.qrange[1] * s)
        zp = float(self.zero_point)
        return ((self.qrange[0] - zp) * s, (self.qrange[1] - zp) * s)

    # -- forward ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.storage
        if not self.training:
            scale = self.effective_scale().detach().reshape(())
            return quantize_dequantize(x, scale, self.zero_point.reshape(()), qmin, qmax)
        scale = self.effective_scale()
        if self.learn_scale:
            grad_factor = 1.0 / math.sqrt(max(1, x[0].numel()) * self.qrange[1])
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, scale, self.zero_point, qmin, qmax, grad_factor
            )
        return torch.fake_quantize_per_tensor_affine(
            x, scale.detach(), self.zero_point.to(torch.int32), qmin, qmax
        )


# -- weighted layers ---------------------------------------------------------------------

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
WEIGHTED = (*_CONV, *_CONV_T, nn.Linear)
FOLDABLE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class QuantLayer(nn.Module):
    """A Conv/ConvTranspose/Linear with fake-quantized weights (and int32 bias), BN folded in.

    With a BatchNorm (`bn`), the layer computes the folded weights from the BN's
    running statistics on every call, so the weights, gamma and beta all train
    and the quantizer sees exactly the folded weight the export will store:

        k = gamma / sqrt(running_var + eps)
        W' = W * k (per output channel),  b' = (b - running_mean) * k + beta

    BN warm-up (`bn_frozen` False, training only): the batch statistics are used
    and the running ones updated, with the weight quantized in its folded form
    (torch.ao's "approximate" ConvBn: conv(x, fq(W * k)) / k, then the BN).
    Once frozen, the running statistics stay fixed and the folded form is exact.

    Weight scales are fixed (`fix_weight_scale`: PTQ's, or max|W| / qmax when
    quantization is enabled) except during BN warm-up, where they follow max|W|.
    """

    bn_frozen: torch.Tensor  # a buffer
    w_scale: torch.Tensor  # a buffer

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(layer, WEIGHTED):
            raise TypeError(
                f"QuantLayer wraps Conv/ConvTranspose/Linear, got {type(layer).__name__}"
            )
        self.layer = cast("_ConvNd | nn.Linear", layer)  # one of WEIGHTED
        self.bn = bn
        self.register_buffer("bn_frozen", torch.tensor(True))
        self.register_buffer("w_scale", torch.ones(0))  # fixed weight scales; empty: max|W| / qmax
        self.quantize_weight = False
        self.weight_axis: int | None = None
        self.qmax = 127
        self.quantize_bias = False
        self._input: tuple[ActivationQuantizer, ...] = ()  # not a submodule: no duplicate state

    def enable_weight_quant(self, axis: int | None, qmax: int) -> None:
        """Quantize the weight per channel along `axis` (scales fixed now), or per tensor (None)."""
        self.quantize_weight, self.weight_axis, self.qmax = True, axis, qmax
        if axis is not None:  # per tensor: max|W| / qmax, as PTQ's export recomputes it
            self.fix_weight_scale()

    def fix_weight_scale(self, scale: torch.Tensor | None = None) -> None:
        """Fix the weight scales: `scale`, or max|W| / qmax of the current (folded) weight.

        Fixed scales make the int8 grid stable while the weights train (they may
        leave it: values beyond ±qmax steps clip, with zero gradient).
        """
        if scale is None:
            scale = weight_scale(self.folded()[0], self.weight_axis, self.qmax)
        self.w_scale = scale.detach().to(torch.float32).clone().reshape(-1)

    def absorb_bn(self) -> None:
        """Fold the BatchNorm into the layer's own weight and bias for good (bn becomes None)."""
        if self.bn is None:
            return
        w, b = self.folded()
        self.layer.weight = nn.Parameter(w.detach().clone())
        self.layer.bias = nn.Parameter(b.detach().clone()) if b is not None else None
        self.bn = None

    def ensure_bias(self) -> None:
        """Give the layer a (zero) bias parameter if it has none."""
        if self.layer.bias is None:
            n = self.layer.weight.shape[1 if isinstance(self.layer, _CONV_T) else 0]
            n = n * (self.layer.groups if isinstance(self.layer, _CONV_T) else 1)
            self.layer.bias = nn.Parameter(torch.zeros(n))

    def current_weight_scale(self, w: torch.Tensor) -> torch.Tensor:
        """The weight scales in use: the fixed ones, or max|W| / qmax."""
        if self.w_scale.numel():
            return self.w_scale if self.weight_axis is not None else self.w_scale.reshape(())
        return weight_scale(w, self.weight_axis, self.qmax)

    def extra_repr(self) -> str:
        return (
            f"quantize_weight={self.quantize_weight}, axis={self.weight_axis}, "
            f"quantize_bias={self.quantize_bias}"
        )

    def set_input_quantizer(self, quantizer: ActivationQuantizer | None) -> None:
        """The quantizer of the layer's input, whose scale the int32 bias uses."""
        self._input = () if quantizer is None else (quantizer,)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float weight and bias the layer computes with (BN folded in)."""
        w, b = self.layer.weight, self.layer.bias
        if self.bn is None:
            return w, b
        k, mean, beta = _bn_parts(self.bn)
        w = w * k.reshape(-1, *([1] * (w.dim() - 1)))
        b0 = b if b is not None else torch.zeros_like(mean)
        b = (b0 - mean) * k
        if beta is not None:
            b = b + beta
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None and self.training and not bool(self.bn_frozen):
            return self._forward_bn_live(x)
        w, b = self.folded()
        exact = not self.training
        if self.quantize_weight:
            scale = self.current_weight_scale(w)
            if self.quantize_bias and b is not None and self._input:
                b = bias_fake_quant(b, self._input[0].effective_scale(), scale, exact=exact)
            w = _weight_fq(w, scale, self.weight_axis, self.qmax, exact)
        return self._call(x, w, b)

    def _forward_bn_live(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        assert bn is not None
        k, _, _ = _bn_parts(bn)
        w = self.layer.weight * k.reshape(-1, *([1] * (self.layer.weight.dim() - 1)))
        if self.quantize_weight:
            w = _weight_fq(
                w, weight_scale(w, self.weight_axis, self.qmax), self.weight_axis, self.qmax, False
            )
        y = self._call(x, w, None)
        shape = (1, -1, *([1] * (y.dim() - 2)))
        y = y / k.reshape(shape)
        if self.layer.bias is not None:
            y = y + self.layer.bias.reshape(shape)
        return bn(y)

    def _call(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return torch.nn.functional.linear(x, w, b)
        if isinstance(layer, _CONV):
            return layer._conv_forward(x, w, b)
        fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d}.get(
            w.dim() - 2, torch.nn.functional.conv_transpose3d
        )
        padding = layer.padding
        assert not isinstance(padding, str)  # transposed convolutions take no padding mode
        return fn(
            x, w, b, layer.stride, padding, layer.output_padding, layer.groups, layer.dilation
        )

    def to_float(self) -> nn.Module:
        """A plain copy of the wrapped layer holding the folded float weights (for export)."""
        import copy

        w, b = self.folded()
        plain = copy.deepcopy(self.layer)
        plain.weight = nn.Parameter(w.detach().clone(), requires_grad=False)
        if b is not None:
            plain.bias = nn.Parameter(b.detach().clone(), requires_grad=False)
        return plain.eval()


def _bn_parts(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(k, running mean, beta) of a BatchNorm, k = gamma / sqrt(running_var + eps) the
    per-channel factor that folding multiplies by (gamma 1 and beta None without affine)."""
    if not isinstance(bn, _BatchNorm) or bn.running_mean is None or bn.running_var is None:
        raise TypeError(f"QuantLayer folds BatchNorms with running statistics, got {bn!r}")
    k = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        return bn.weight * k, bn.running_mean, bn.bias
    return k, bn.running_mean, None


def _weight_fq(
    w: torch.Tensor, scale: torch.Tensor, axis: int | None, qmax: int, exact: bool
) -> torch.Tensor:
    if exact:
        return quantize_dequantize(w, scale, torch.zeros_like(scale), -qmax, qmax, axis)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(w, float(scale), 0, -qmax, qmax)
    zeros = torch.zeros(scale.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zeros, axis % w.dim(), -qmax, qmax)
