"""The Target protocol: everything the pipeline asks of a place models run.

A target says what it accepts (`precisions`, `formats`), how the passes should
shape a model for it (`quant_spec`, `channel_multiple`), whether it can run
here (`unavailable_reason`), and it lowers an optimized ONNX model to its
runtime's format (`lower`) and opens a runner on the artifact (`runner`).
Runners follow Polygraphy's shape: a context manager with
`infer(feeds) -> outputs`; GPU libraries are imported lazily inside.

Which targets exist is `targets.registry`'s table, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnx_ir as ir

from compiler.ground.errors import InvalidInput

if TYPE_CHECKING:
    from passes.quantize.spec import QuantSpec

#: What every target accepts for `--precision` today (fp16 is refused by the pipeline).
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "auto")


@dataclass(frozen=True)
class Artifact:
    """What `lower` wrote: the path and its format (`onnx`, `ort`, `engine`)."""

    path: Path
    format: str


class Runner(Protocol):
    """An inference session on one artifact; use as a context manager."""

    input_names: list[str]

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def check_feeds(feeds: Mapping[str, np.ndarray], input_names: list[str], name: str) -> None:
    """Raise InvalidInput unless `feeds` names exactly the inputs `name` expects."""
    missing = [n for n in input_names if n not in feeds]
    unknown = [n for n in feeds if n not in input_names]
    if missing or unknown:
        raise InvalidInput(
            f"inputs do not match {name}: missing {missing}, unknown {unknown}; "
            f"it expects {input_names}"
        )


class Target(Protocol):
    """A place models run: onnxruntime CPU, onnxruntime CUDA, TensorRT.

    The data members are read-only; an implementation may use class attributes
    or properties for them.
    """

    @property
    def name(self) -> str:
        """The `--target` name: "cpu", "cuda", "tensorrt"."""
        ...

    @property
    def quant_spec(self) -> QuantSpec:
        """The INT8 quantization this target runs fastest (what `--precision int8` inserts)."""
        ...

    @property
    def channel_multiple(self) -> int:
        """Channel counts structured pruning rounds to (the target's kernels prefer multiples)."""
        ...

    @property
    def precisions(self) -> tuple[str, ...]:
        """The `--precision` values this target accepts."""
        ...

    @property
    def auto_precisions(self) -> tuple[str, ...]:
        """What `--precision auto` compiles, measures and chooses among (fp32 first)."""
        ...

    @property
    def formats(self) -> tuple[str, ...]:
        """The artifact formats `lower` can write; the first is the default."""
        ...

    @property
    def fusions(self) -> str:
        """Which transformer fusion rules suit its runtime: "onnxruntime" (contrib ops such
        as SkipLayerNormalization, Attention, BiasGelu) or "portable" (standard ONNX only)."""
        ...

    @property
    def quant_modes(self) -> tuple[str, ...]:
        """The `--quant-mode` values it runs: "static" (calibrated Q/DQ), and "dynamic"
        (int8 weights, activations quantized per call) where its runtime has the kernels."""
        ...

    def precision_refusal(self, precision: str) -> str | None:
        """None when the target runs `precision`, else a one-line reason with what to use."""
        ...

    def unavailable_reason(self) -> str | None:
        """None when the target can run here, else a one-line reason with what to do."""
        ...

    def lower(
        self, model: ir.Model, out_dir: Path, *, stem: str, fmt: str | None = None
    ) -> Artifact:
        """Write the deployable artifact atomically into `out_dir`."""
        ...

    def runner(self, artifact: Path, *, threads: int | None = None) -> Runner:
        """Open a runner on an artifact this target wrote (or any .onnx file)."""
        ...


def unlisted_precision(target: Target, precision: str) -> str | None:
    """The plain refusal of a precision the target does not list (None when it does)."""
    if precision in target.precisions:
        return None
    return (
        f"target {target.name} does not run --precision {precision}; "
        f"choose one of {', '.join(target.precisions)}"
    )
