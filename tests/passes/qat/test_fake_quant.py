"""Fake-quant numerics against numpy references of the ONNX operators and PTQ's parameter math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from passes.qat.fake_quant import (
    ActivationQuantizer,
    QuantLayer,
    bias_fake_quant,
    quantize_dequantize,
    weight_fake_quant,
    weight_scale,
)
from passes.quantize.params import (
    activation_qparams,
    dequantize_weight,
    quantize_bias,
    quantize_weight,
)
from passes.quantize.spec import CPU_SPEC, TENSORRT_SPEC


def onnx_qdq(x: np.ndarray, scale, zp, lo: int, hi: int, axis: int | None = None) -> np.ndarray:
    """numpy reference of ONNX QuantizeLinear → DequantizeLinear (division, half-to-even)."""
    scale, zp = np.asarray(scale, np.float32), np.asarray(zp, np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    q = np.clip(np.round(x / scale) + zp, lo, hi)
    return ((q - zp) * scale).astype(np.float32)


@pytest.mark.parametrize("lo,hi,zp", [(0, 255, 131), (0, 255, 0), (-128, 127, 0)])
def test_quantize_dequantize_matches_onnx_reference_at_ties(lo: int, hi: int, zp: int) -> None:
    rng = np.random.default_rng(0)
    s = np.float32(0.0173)
    k = rng.integers(lo - zp - 5, hi - zp + 5, 20000).astype(np.float32)
    ties = (k + np.float32(0.5)) * s  # exactly or within an ulp of a half step
    x = np.concatenate([ties, np.nextafter(ties, np.float32(-1e9)), np.nextafter(ties, np.float32(1e9)),
                        rng.normal(0, 2, 20000).astype(np.float32)]).astype(np.float32)  # fmt: skip
    got = quantize_dequantize(
        torch.from_numpy(x), torch.tensor(s), torch.tensor(float(zp)), lo, hi
    ).numpy()
    np.testing.assert_array_equal(got, onnx_qdq(x, s, zp, lo, hi))


@pytest.mark.parametrize("axis", [0, 1, None])
@pytest.mark.parametrize("spec", [CPU_SPEC, TENSORRT_SPEC, CPU_SPEC.replace(reduce_range=True)])
def test_weight_quantization_is_ptqs_bit_for_bit(axis: int | None, spec) -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (8, 6, 3, 3)).astype(np.float32)
    w[3] = 0.0  # an all-zero channel gets scale 1
    q, scale = quantize_weight(w, axis, spec)
    ref = dequantize_weight(q, scale, axis)
    wt = torch.from_numpy(w)
    np.testing.assert_array_equal(weight_scale(wt, axis, spec.weight_qmax).numpy(), scale)
    np.testing.assert_array_equal(
        weight_fake_quant(wt, axis, spec.weight_qmax, exact=True).numpy(), ref
    )
    # the training kernel (reciprocal multiply) may differ only at exact half steps
    train = weight_fake_quant(wt, axis, spec.weight_qmax, exact=False).detach().numpy()
    assert (train != ref).mean() < 1e-3


def test_bias_quantization_is_ptqs() -> None:
    rng = np.random.default_rng(2)
    b = rng.normal(0, 1, 16).astype(np.float32)
    w_scale = rng.uniform(1e-3, 1e-2, 16).astype(np.float32)
    x_scale = np.float32(0.0231)
    q, scale = quantize_bias(b, x_scale, w_scale)
    got = bias_fake_quant(
        torch.from_numpy(b), torch.tensor([x_scale]), torch.from_numpy(w_scale), exact=True
    )
    np.testing.assert_array_equal(got.numpy(), q.astype(np.float32) * scale)


@pytest.mark.parametrize("spec", [CPU_SPEC, TENSORRT_SPEC])
@pytest.mark.parametrize("bounds", [(-math.inf, math.inf), (0.0, math.inf), (0.0, 6.0)])
def test_quantizer_range_maps_back_to_its_own_parameters(spec, bounds) -> None:
    """export hands `range()` to PTQ's activation_qparams: it must give back (scale, zp) exactly."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        lo = 0.0 if bounds[0] == 0 else -rng.uniform(0, 8)
        hi = rng.uniform(0.01, 9)
        lo_c, hi_c = max(lo, bounds[0]), min(hi, bounds[1])
        scale, zp = activation_qparams(lo_c, hi_c, spec)
        q = ActivationQuantizer(spec.activation_dtype, symmetric=spec.activation_symmetric,
                                qrange=spec.activation_qrange, bounds=bounds)  # fmt: skip
        q.set_params(float(scale), int(zp))
        q.scale.data *= np.float32(
            rng.choice([1.0, 1.5, 0.7])
        )  # as if learned, maybe out of bounds
        s_eff = np.float32(q.effective_scale().item())
        r_lo, r_hi = q.range()
        if spec.activation_symmetric:  # ±amax; PTQ clamps to the interval, then takes max |.|
            assert max(-r_lo, r_hi) <= max(-bounds[0], bounds[1])
        else:
            assert bounds[0] <= r_lo and r_hi <= bounds[1]
        s2, zp2 = activation_qparams(max(r_lo, bounds[0]), min(r_hi, bounds[1]), spec)
        assert (s2, int(zp2)) == (s_eff, int(q.zero_point))


@pytest.mark.parametrize("spec", [CPU_SPEC, TENSORRT_SPEC])
def test_activation_quantizer_eval_is_onnx_and_training_agrees(spec) -> None:
    q = ActivationQuantizer(spec.activation_dtype, symmetric=spec.activation_symmetric,
                            qrange=spec.activation_qrange)  # fmt: skip
    scale, zp = activation_qparams(-1.3, 2.9, spec)
    q.set_params(float(scale), int(zp))
    x = torch.from_numpy(np.random.default_rng(4).normal(0, 2, (4, 3, 5, 5)).astype(np.float32))
    storage = (0, 255) if spec.activation_dtype == "uint8" else (-128, 127)
    q.eval()
    np.testing.assert_array_equal(q(x).numpy(), onnx_qdq(x.numpy(), scale, zp, *storage))
    q.train()
    y = q(x)
    assert (y.detach().numpy() != onnx_qdq(x.numpy(), scale, zp, *storage)).mean() < 1e-3


def test_lsq_gradients() -> None:
    """d/dx: 1 inside the range, 0 outside; d/ds: (round(x/s) - x/s) inside, the clip level
    outside, times g = 1/sqrt(n * qmax) (LSQ, Esser et al. 2020)."""
    q = ActivationQuantizer("uint8", symmetric=False, qrange=(0, 255))
    s, zp = 0.05, 10
    q.set_params(s, zp)
    q.train()
    x = torch.tensor([[-1.0, -0.2, 0.013, 0.51, 3.0, 20.0]], requires_grad=True)
    q(x).sum().backward()
    xs = x.detach().numpy()[0] / np.float32(s)
    inside = (xs + zp >= 0) & (xs + zp <= 255)
    np.testing.assert_array_equal(x.grad.numpy()[0], inside.astype(np.float32))
    per = np.where(inside, np.round(xs) - xs, np.where(xs + zp < 0, 0 - zp, 255 - zp))
    g = 1 / math.sqrt(6 * 255)
    np.testing.assert_allclose(q.scale.grad.item(), per.sum() * g, rtol=1e-4)


def test_quantizer_scale_stays_inside_the_activation_interval() -> None:
    q = ActivationQuantizer("uint8", symmetric=False, qrange=(0, 255), bounds=(0.0, 6.0))
    q.set_params(0.1, 0)  # 25.5 > 6
    assert q.range()[1] <= 6.0
    assert q.effective_scale().item() == pytest.approx(6.0 / 255, rel=1e-6)
    q.train()
    x = torch.linspace(0, 10, 50, requires_grad=False).reshape(1, -1)
    q(x).sum().backward()
    assert q.scale.grad.item() == 0.0  # clamped: no gradient pushes it further


@pytest.mark.parametrize("bias", [True, False])
def test_quant_layer_folds_batchnorm_exactly(bias: bool) -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, bias=bias), nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    ref = nn.Sequential(conv, bn).eval()
    layer = QuantLayer(conv, bn).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.to_float()(x), ref(x), rtol=1e-5, atol=1e-5)
    layer.quantize_weight, layer.weight_axis = True, 0
    w, _ = layer.folded()
    q, scale = quantize_weight(w.detach().numpy(), 0, CPU_SPEC)
    with torch.no_grad():
        expect = nn.functional.conv2d(
            x, torch.from_numpy(dequantize_weight(q, scale, 0)), layer.folded()[1]
        )
        torch.testing.assert_close(layer(x), expect, rtol=0, atol=0)


def test_quant_layer_bn_warmup_updates_statistics_then_freezes() -> None:
    torch.manual_seed(0)
    layer = QuantLayer(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    layer.quantize_weight, layer.weight_axis = True, 0
    layer.bn_frozen.fill_(False)
    layer.train()
    before = layer.bn.running_mean.clone()
    y = layer(torch.randn(8, 3, 6, 6) + 2)
    assert not torch.equal(before, layer.bn.running_mean)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 0.2  # batch statistics normalize the output
    layer.bn_frozen.fill_(True)
    frozen = layer.bn.running_mean.clone()
    layer(torch.randn(8, 3, 6, 6))
    assert torch.equal(frozen, layer.bn.running_mean)
