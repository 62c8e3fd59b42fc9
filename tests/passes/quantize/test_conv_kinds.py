"""Every INT8 step on 1-D, grouped, depthwise, long-kernel and dilated convolutions
(#18 part 3): calibration, range search, GPTQ rounding and bias correction.

A grouped 1-D Conv with a kernel longer than its input (wav2vec2's positional conv:
kernel 128, padding 64, 16 groups, on a few dozen frames) crashed GPTQ: its 1-D
padding was put on the height of the (N, C, 1, L) view instead of the width, so
unfold saw a sequence shorter than the kernel (exit 1). The Hessians are checked
against patches taken independently (Tensor.unfold), then a model holding each kind
is quantized end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F

from passes.quantize import PtqOptions, quantize
from passes.quantize.rounding import _Layer, _patch_moments
from tests.passes.quantize import _models

# (channels, kernel, stride, pads (begin, end), dilation, group, input length or (h, w))
Kind = tuple[
    int,
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    tuple[int, ...],
    int,
    int | tuple[int, int],
]
KINDS: dict[str, Kind] = {
    "conv1d": (8, (10,), (5,), (0, 0), (1,), 1, 60),
    "grouped_long_kernel": (64, (128,), (1,), (64, 64), (1,), 16, 40),
    "depthwise_1d": (16, (31,), (1,), (15, 15), (1,), 16, 50),
    "dilated_1d": (8, (3,), (1,), (4, 4), (4,), 1, 30),
    "grouped_dilated_2d": (16, (5, 5), (1, 1), (4, 4, 4, 4), (2, 2), 4, (9, 11)),
    "depthwise_strided_2d": (16, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 16, (12, 10)),
    # padding on some sides only: the depthwise moments pad implicitly, view by view
    "depthwise_uneven_pads": (8, (3, 3), (2, 1), (2, 0, 1, 3), (2, 1), 8, (9, 11)),
}


def _reference(
    x: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: tuple[int, ...],
    dilation: tuple[int, ...],
    group: int,
) -> np.ndarray:
    """Sum of patch outer products per group, from Tensor.unfold on the padded input."""
    nd = len(kernel)
    torch_pad = [
        p for b, e in zip(reversed(pads[:nd]), reversed(pads[nd:]), strict=True) for p in (b, e)
    ]
    t = F.pad(x, torch_pad).double()
    n, c = t.shape[:2]
    for d in range(nd):  # (n, c, *out, *kernel-with-dilation) windows, then the taps
        span = dilation[d] * (kernel[d] - 1) + 1
        t = t.unfold(2 + d, span, stride[d])
    taps = t[(...,) + tuple(slice(None, None, dilation[d]) for d in range(nd))]
    out_dims = taps.shape[2 : 2 + nd]
    cols = taps.reshape(n, c, int(np.prod(out_dims)), int(np.prod(kernel)))
    cols = cols.permute(1, 3, 0, 2).reshape(group, (c // group) * int(np.prod(kernel)), -1)
    return torch.bmm(cols, cols.transpose(1, 2)).numpy()


@pytest.mark.parametrize("kind", list(KINDS))
def test_hessian_matches_independent_patches(kind: str) -> None:
    c, kernel, stride, pads, dilation, group, size = KINDS[kind]
    shape = (3, c, size) if isinstance(size, int) else (3, c, *size)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    layer = _Layer(None, "x", None, "conv", kernel, stride, pads, dilation, group)  # type: ignore[arg-type]
    got = _patch_moments(layer, x.numpy(), max_columns=1 << 30)
    assert got is not None
    h, _ = got
    np.testing.assert_allclose(
        h, _reference(x, kernel, stride, pads, dilation, group), rtol=1e-5, atol=1e-3
    )


class _Kinds(torch.nn.Module):
    """A speech-style 1-D encoder (strided, grouped long-kernel positional conv, depthwise,
    dilated) feeding a small 2-D stack (grouped dilated, depthwise strided) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = torch.nn.Conv1d(8, 64, 10, stride=5)
        self.pos = torch.nn.Conv1d(64, 64, 128, padding=64, groups=16)
        self.dw = torch.nn.Conv1d(64, 64, 31, padding=15, groups=64)
        self.dil = torch.nn.Conv1d(64, 64, 3, padding=4, dilation=4)
        self.c2 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.g2 = torch.nn.Conv2d(16, 16, 5, padding=4, dilation=2, groups=4)
        self.d2 = torch.nn.Conv2d(16, 16, 7, stride=2, padding=3, groups=16)
        self.head = torch.nn.Linear(64 + 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c0(x))
        h = h + F.gelu(self.pos(h)[..., :-1])
        h = torch.relu(self.dw(h))
        h = torch.relu(self.dil(h))
        g = torch.relu(self.c2(h[:, :1].reshape(x.shape[0], 1, 5, -1)))
        g = torch.relu(self.g2(g))
        g = torch.relu(self.d2(g))
        return self.head(torch.cat([h.mean(-1), g.mean((-1, -2))], 1))


def test_every_step_on_every_conv_kind(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Kinds().eval()
    with torch.no_grad():
        module.head.bias.zero_()  # the output is all signal, no constant to hide behind
    x = torch.randn(64, 8, 255)  # 50 frames: shorter than the positional kernel
    path = tmp_path / "kinds.onnx"
    torch.onnx.export(
        module,
        (x[:2],),
        str(path),
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        dynamo=False,
    )
    model = ir.from_proto(onnx.load(str(path)))
    xs = x.numpy()
    q, summary = quantize(model, xs[:48], PtqOptions(samples=48))  # every step on
    assert summary.qdq_counts["Conv"]["weight"] == 7
    assert summary.rounded_layers == 8  # GPTQ on every weight (the float stem keeps int8 ones)
    assert summary.bias_corrected == 8
    ref, out = _models.run(model, {"x": xs[48:]}), _models.run(q, {"x": xs[48:]})
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() >= 0.98
