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


#: A model's sample data: one array (single-input models) or one per input name.
Samples = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One model input; `shape` is a batch-1 example, axis 0 is the dynamic batch.

    `dynamic_axes` names further axes the exported model keeps dynamic ((axis,
    dim_param) pairs, e.g. ((1, "sequence"),)); `shape` gives their default size
    for data and timing, overridable with `--dim NAME=N`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dynamic_axes: tuple[tuple[int, str], ...] = ()

    def export_axes(self) -> dict[int, str]:
        """Every dynamic axis of this input for the exporter: the batch and the named ones."""
        return {0: "batch", **dict(self.dynamic_axes)}


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    `calibration_data(n)` returns n preprocessed inputs (N, *shape[1:]) for calibration
    (one array, or {input name: array} for a multi-input model);
    `evaluation_data(n)` returns (inputs, labels or None) from a disjoint source.
    """

    name: str
    task: str
    description: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    weights_source: str
    build: Callable[[], torch.nn.Module]
    calibration_data: Callable[[int], Samples]
    evaluation_data: Callable[[int], tuple[Samples, np.ndarray | None]]
    default_calib_samples: int = 256
    #: training-side samples that recovery fine-tuning after pruning reads by default
    #: (None: `default_calib_samples`); a small dataset's whole training side costs little
    default_finetune_samples: int | None = None
    default_eval_samples: int = 64
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: RGB uint8 (H, W, 3) image → one preprocessed sample; lets `--calib FOLDER` read photos.
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None
    #: whether the first output is class scores (top-k agreement means something); an
    #: embedding model says False, and is judged by cosine similarity instead
    class_scores: bool = True
    #: sentences → {input name: array}; lets `--calib`/`--eval sentences.txt` read text.
    tokenize: Callable[[list[str]], dict[str, np.ndarray]] | None = None

    def default_dims(self) -> dict[str, int]:
        """Sizes of the named dynamic axes (dim_param → size) the zoo's own data use."""
        return {name: spec.shape[axis] for spec in self.inputs for axis, name in spec.dynamic_axes}
