"""Small torch models for the QAT tests, covering every placement rule of the PTQ plan."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyResNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block (Add), a ReLU6 branch concatenated, MaxPool,
    global average pool, Flatten, Linear: Conv, Add, Concat, GAP, MaxPool, Clip and Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8),
        )  # fmt: skip
        self.side = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU6())
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(12, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.block(x)
        x = torch.cat([x, self.side(x)], dim=1)
        x = self.head(self.pool(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def tiny_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = TinyResNet()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


class FunctionalWeight(nn.Module):
    """A matmul with a parameter weight, not an nn.Linear: QAT cannot own its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.flatten(1), self.w)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # fx cannot trace a branch on data
            return self.conv(x)
        return self.conv(-x)


class TinyMobile(nn.Module):
    """An inverted-residual block (expand → ReLU6 → depthwise → ReLU6 → project, + skip),
    with channels of very different ranges, so PTQ's equalization moves Clip bounds."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()
        )
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_mobile(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = TinyMobile()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.copy_(torch.logspace(-1.5, 0.5, n)[torch.randperm(n)])  # ranges 1:100
                mod.bias.uniform_(0.0, 0.5)
    return m.eval()
