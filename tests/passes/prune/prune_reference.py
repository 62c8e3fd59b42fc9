"""Torch references for channel-pruning tests: small models, export, slicing, ORT.

A pruned graph is checked against the *same torch model with the same channels
removed*: `sliced` copies a module and slices its Conv/BN/Linear parameters by
the kept indices the pass chose, so the reference shares nothing with the pass's
own graph editing.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

F32_TOL = {"rtol": 1e-4, "atol": 1e-5}


def export(module: nn.Module, x: np.ndarray, *, keep_batchnorm: bool = False) -> onnx.ModelProto:
    """TorchScript export at opset 17 (BN folded into Conv unless keep_batchnorm)."""
    module.eval()
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(x),),
            buf,
            dynamo=False,
            opset_version=17,
            training=mode,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    if keep_batchnorm:  # PRESERVE leaves dangling Identity nodes on BN params
        model = ir.from_proto(proto)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        proto = ir.to_proto(model)
    return proto


def run_onnx(model: ir.Model | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def run_torch(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous())


def sliced(
    module: nn.Module,
    out: Mapping[str, Sequence[int] | np.ndarray] = {},  # noqa: B006 (read only)
    inp: Mapping[str, Sequence[int] | np.ndarray] = {},  # noqa: B006
) -> nn.Module:
    """A copy of `module` with output channels `out[name]` and input channels `inp[name]` kept."""
    m = copy.deepcopy(module).eval()
    mods = dict(m.named_modules())
    for name, idx in out.items():
        mod, i = mods[name], torch.as_tensor(np.asarray(idx), dtype=torch.long)
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
            mod.weight, mod.bias = _param(mod.weight[i]), _param(mod.bias[i])
            mod.running_mean = mod.running_mean[i].clone()
            mod.running_var = mod.running_var[i].clone()
            mod.num_features = len(i)
            continue
        mod.weight = _param(mod.weight[i])
        if mod.bias is not None:
            mod.bias = _param(mod.bias[i])
        if isinstance(mod, nn.Conv2d):
            mod.out_channels = len(i)
            if mod.groups > 1:  # depthwise: its inputs follow its outputs
                mod.groups = mod.in_channels = len(i)
        else:
            mod.out_features = len(i)
    for name, idx in inp.items():
        mod, i = mods[name], torch.as_tensor(np.asarray(idx), dtype=torch.long)
        mod.weight = _param(mod.weight[:, i])
        if isinstance(mod, nn.Conv2d):
            mod.in_channels = len(i)
        else:
            mod.in_features = len(i)
    return m


def expand(channels: np.ndarray, inner: int) -> np.ndarray:
    """Flatten positions of channels that each cover `inner` features."""
    return (np.asarray(channels)[:, None] * inner + np.arange(inner)[None, :]).reshape(-1)


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics so folding and slicing errors show up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return module.eval()


# ---------------------------------------------------------------------------
# Small models, one per topology


class Chain(nn.Module):
    """conv-bn-relu → conv-bn-relu → maxpool → flatten(12x4x4) → fc → relu → fc."""

    def __init__(self, c1: int = 8, c2: int = 12, hidden: int = 16) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1)
        self.c2, self.b2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        self.fc1, self.fc2 = nn.Linear(c2 * 16, hidden), nn.Linear(hidden, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class Residual(nn.Module):
    """ResNet-like: stem, identity block (stem+conv b joined), projection block
    (proj+main joined), channel mean (ReduceMean), fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bs = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.a, self.ba = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.b, self.bb = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.main, self.bm = nn.Conv2d(8, 10, 3, stride=2, padding=1), nn.BatchNorm2d(10)
        self.proj = nn.Conv2d(8, 10, 1, stride=2)
        self.fc = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bs(self.stem(x)))
        x = F.relu(x + self.bb(self.b(F.relu(self.ba(self.a(x))))))
        x = F.relu(self.bm(self.main(x)) + self.proj(x))
        return self.fc(x.mean(dim=(2, 3)))


class Depthwise(nn.Module):
    """MobileNetV2-like: expand 1x1 → depthwise 3x3 → ReLU6 → project → HardSwish → GAP → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.expand, self.be = nn.Conv2d(3, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.dw, self.bd = (
            nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),
            nn.BatchNorm2d(12),
        )
        self.project, self.bp = nn.Conv2d(12, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.be(self.expand(x)))
        x = F.relu6(self.bd(self.dw(x)))
        x = F.hardswish(self.bp(self.project(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Concat(nn.Module):
    """Two branches and the raw input concatenated on channels: [a(6) | x(3) | b(5)]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 5, 1)
        self.c = nn.Conv2d(14, 7, 3, padding=1)
        self.fc = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), x, torch.sigmoid(self.b(x))], dim=1)
        return self.fc(F.relu(self.c(y)).mean(dim=(2, 3)))
