"""What a zoo model is: its inputs, how to build it, and its sample data.

Every zoo model carries everything the compiler needs to measure it honestly:
its input spec, a builder that returns the torch module with real (or stated)
weights, and calibration/evaluation sets that never overlap. Which models exist
is `models.registry`'s table, not this module's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class InputSpec:
    """One model input; `shape` is a batch-1 example, axis 0 is the dynamic batch."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    `calibration_data(n)` returns n preprocessed inputs (N, *shape[1:]) for calibration;
    `evaluation_data(n)` returns (inputs, labels or None) from a disjoint source.
    """

    name: str
    task: str
    description: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    weights_source: str
    build: Callable[[], torch.nn.Module]
    calibration_data: Callable[[int], np.ndarray]
    evaluation_data: Callable[[int], tuple[np.ndarray, np.ndarray | None]]
    default_calib_samples: int = 256
    default_eval_samples: int = 64
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: RGB uint8 (H, W, 3) image → one preprocessed sample; lets `--calib FOLDER` read photos.
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None
