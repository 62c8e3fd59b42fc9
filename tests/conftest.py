"""Shared fixtures: small real models written to disk, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

# Keep test processes from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def small_cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Conv-BN-ReLU-Pool-Flatten-Linear classifier exported by torch (dynamic batch)."""
    import torch

    from compiler.export import export_torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 10),
    ).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    proto = export_torch(m, [np.zeros((1, 3, 16, 16), np.float32)], input_names=["input"])
    path = tmp_path_factory.mktemp("models") / "small_cnn.onnx"
    onnx.save(proto, str(path))
    return path
