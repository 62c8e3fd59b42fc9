"""Every choice the FP16 pass makes, in one frozen, validated object.

`Fp16Options` is the single home of the pass's defaults; a bad value raises
`PassOptionError` with a one-line message when the object is built, before any
data is read. Why the defaults are what they are is in the `passes.precision`
module docstring.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from passes.errors import PassOptionError

__all__ = ["DEFAULT_KEEP_OP_TYPES", "FP16_MAX", "Fp16Options"]

#: The largest finite float16 value.
FP16_MAX = 65504.0

#: Op types kept in float32 whatever the data says: reductions that accumulate many
#: terms (and whose float16 kernels may accumulate in float16), powers, random
#: generators (their outputs are set by a dtype attribute) and Range and CumSum
#: (index-like sequences that float16 cannot count exactly past 2048).
DEFAULT_KEEP_OP_TYPES: tuple[str, ...] = (
    "Bernoulli",
    "CumSum",
    "Multinomial",
    "Pow",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Range",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMean",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)


@dataclass(frozen=True)
class Fp16Options:
    """What `Fp16Pass` converts and on how much data.

    - `keep_io_types`: graph inputs and outputs of float32 stay float32 (a Cast at the
      boundary); False: they become float16.
    - `max_abs`: a node whose float inputs or outputs reach a finite magnitude above this
      on the calibration data stays float32 (default: float16's 65504 with a 16x safety
      factor, for inputs the calibration data did not cover).
    - `max_relative_error`: a node whose own float16 error (its float16 kernel on its
      float32 reference inputs rounded to float16, against its float32 reference output;
      RMS error / RMS reference) exceeds this stays float32.
    - `keep_op_types`: op types always kept float32 (default `DEFAULT_KEEP_OP_TYPES`).
    - `keep_norm_statistics`: keep the statistics of a decomposed normalization
      (the Add/Sqrt/Reciprocal after a kept reduction and the Div/Mul applying them).
    - `exclude`: node names kept float32.
    - `samples`: calibration samples read (None: all), in batches of `batch_size`
      (every intermediate tensor of a batch is held at once: MobileNetV2 at batch 4
      peaks at 1.2 GB, at batch 8 at 1.8 GB).
    - `validate`: run the converted model on the calibration data and report its
      output error against float32 in the summary.
    - `threads`: onnxruntime's intra-op threads for the analysis runs (0: all cores).
    """

    keep_io_types: bool = False
    max_abs: float = FP16_MAX / 16
    max_relative_error: float = 0.01
    keep_op_types: tuple[str, ...] = DEFAULT_KEEP_OP_TYPES
    keep_norm_statistics: bool = True
    exclude: tuple[str, ...] = ()
    samples: int | None = 32
    batch_size: int = 4
    validate: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("exclude", "keep_op_types"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise PassOptionError(f"{name} must be a list of names, not {value!r}")
            names = tuple(value)
            if not all(isinstance(v, str) and v for v in names):
                raise PassOptionError(f"{name} must be a list of names, not {value!r}")
            object.__setattr__(self, name, names)
        for name in ("keep_io_types", "keep_norm_statistics", "validate"):
            if not isinstance(getattr(self, name), bool):
                raise PassOptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        if not _is_number(self.max_abs) or not 0 < self.max_abs <= FP16_MAX:
            raise PassOptionError(
                f"max_abs must be in (0, {FP16_MAX:g}] (float16's largest value), got {self.max_abs!r}"
            )
        if not _is_number(self.max_relative_error) or not self.max_relative_error > 0:
            raise PassOptionError(
                f"max_relative_error must be a positive number, e.g. 0.01, got {self.max_relative_error!r}"
            )
        if self.samples is not None and (not _is_int(self.samples) or self.samples < 1):
            raise PassOptionError(
                f"the number of calibration samples must be at least 1, got {self.samples!r}"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise PassOptionError(f"the batch size must be at least 1, got {self.batch_size!r}")
        if not _is_int(self.threads) or self.threads < 0:
            raise PassOptionError(
                f"threads must be a whole number, 0 for all cores, got {self.threads!r}"
            )

    def report(self) -> dict[str, Any]:
        """The options as plain data, for the report."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
