"""Which targets exist: the name → Target table.

Adding a target means writing a class that satisfies `targets.base.Target` and
adding one line to `TARGETS`. Each target module imports its runtime
(onnxruntime, TensorRT, cuda-python) lazily, so importing this table is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from targets.base import Target
from targets.cpu import CpuTarget
from targets.cuda import CudaTarget
from targets.tensorrt import TensorRTTarget

#: `--target` name → a constructor taking no arguments (the pipeline's defaults).
TARGETS: dict[str, Callable[[], Target]] = {
    "cpu": CpuTarget,
    "cuda": CudaTarget,
    "tensorrt": TensorRTTarget,
}


def get_target(name: str) -> Target:
    """The target called `name`; raises KeyError listing the known ones."""
    if name not in TARGETS:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(target_names())}")
    return TARGETS[name]()


def target_names() -> list[str]:
    """The known target names, sorted."""
    return sorted(TARGETS)
