"""Peak memory of the deployed process (compiler/memory.py): the child's own, not the
compiler's. getrusage's ru_maxrss survives fork+exec on Linux, so a child of a 2 GB
compile once reported 2.3 GB for a 1 KB model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.memory import peak_memory_mb
from tests.compiler.test_outputs import two_output_model


def test_the_parents_memory_is_not_counted(tmp_path: Path) -> None:
    model = two_output_model(tmp_path / "two.onnx")
    feeds = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    ballast = np.ones(600_000_000, np.uint8)  # the measuring process holds 600 MB
    peak = peak_memory_mb(model, feeds, threads=1)
    runtime = peak_memory_mb(None, feeds, threads=1)
    assert ballast.sum() == 600_000_000
    assert runtime is not None and peak is not None
    assert runtime <= peak < runtime + 100  # a 1 KB model adds little to the runtime
    assert peak < 400  # numpy + onnxruntime + a tiny model, not the 600 MB parent


def test_an_engine_is_not_measured(tmp_path: Path) -> None:
    assert peak_memory_mb(tmp_path / "m.engine", {}, threads=1) is None
