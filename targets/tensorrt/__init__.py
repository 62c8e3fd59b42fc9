"""The TensorRT target: ONNX → TensorRT 10.x/11.x engine (`<stem>.engine`) and a runner for it.

TensorRT is an optional extra (`pip install '.[tensorrt]'`) and needs an NVIDIA
GPU; `unavailable_reason()` says, in one line, what is missing here. Modules:
`settings` (what to ask the builder for; pure Python), `shapes` (the
optimization profile), `compat` (which TensorRT, what its bindings offer, the
messages when it is missing), `build` (`EngineFromOnnx`), `engine_info` (the
engine inspector's JSON, summarized), `runner` (`TrtRunner`). `tensorrt` and
`cuda-python` are imported only when an engine is built or run.

Every network is strongly typed (TensorRT 11 has no other kind; 10.x is asked
for it): the precision is the graph's — Q/DQ nodes for int8, float16 tensors for
fp16 — and the report's `engine` section says what the built engine really runs
in, read back with TensorRT's engine inspector.

How the pipeline passes its flags: `targets.registry` builds `TensorRTTarget()` with
defaults (precision read from the model: Q/DQ → int8, float16 tensors → fp16,
else fp32; batch 1, engine valid up to batch 16, the pipeline's evaluation
batch). A caller that knows better constructs `TensorRTTarget(precision=...,
batch=..., max_batch=..., device_profile=..., input_shapes=..., shape_ranges=...,
use_dla=..., timing_cache=...)` or passes ready `settings=` to `lower`.

`lower` returns an `EngineArtifact`: the `Artifact` the protocol asks for, plus
`report` — JSON-ready facts for the report (TensorRT version, builder
settings, layer count and layers per precision, the timing cache's path).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import onnx_ir as ir

from compiler.ground.errors import TargetUnavailable, UsageError
from compiler.ground.io import load_onnx_proto
from targets.base import DEFAULT_PRECISIONS, Artifact, unlisted_precision
from targets.cpu import _check_stem
from targets.profiles import DeviceProfile
from targets.tensorrt.build import EngineFromOnnx
from targets.tensorrt.compat import import_tensorrt, require_api
from targets.tensorrt.runner import TrtRunner, cuda_device_problem
from targets.tensorrt.settings import (
    BuilderSettings,
    ShapeProfile,
    ShapeRange,
    check_onnx_for_tensorrt,
    derive_settings,
    graph_precision,
)

if TYPE_CHECKING:
    from passes.quantize.spec import QuantSpec

__all__ = [
    "BuilderSettings",
    "EngineArtifact",
    "EngineFromOnnx",
    "ShapeProfile",
    "TensorRTTarget",
    "TrtRunner",
    "check_onnx_for_tensorrt",
    "derive_settings",
    "engine_report",
    "probe_tensorrt",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16  # compiler.pipeline.EVAL_BATCH: the evaluation feeds batches this large
TIMING_CACHE_SUFFIX = ".timing.cache"


@functools.cache
def probe_tensorrt() -> str | None:
    """None when TensorRT 10/11 and a CUDA device are usable here, else a one-line reason.

    Cached for the process; `probe_tensorrt.cache_clear()` forgets the answer.
    """
    try:
        require_api(import_tensorrt())
    except TargetUnavailable as e:
        return str(e)
    return cuda_device_problem()


@dataclass(frozen=True)
class EngineArtifact(Artifact):
    """An `.engine` and what the build says about it (`report`: JSON-ready, for the report)."""

    report: dict[str, object] = field(default_factory=dict)


def engine_report(loader: EngineFromOnnx) -> dict[str, object]:
    """The report's facts about a build `loader` has done."""
    summary = loader.summary
    return {
        "tensorrt_version": loader.tensorrt_version,
        "settings": loader.settings.to_dict(),
        "timing_cache": str(loader.timing_cache) if loader.timing_cache else None,
        **(
            summary.to_dict()
            if summary is not None
            else {"layers": None, "layers_by_precision": None, "detailed": None, "io_types": None}
        ),
    }


class TensorRTTarget:
    """TensorRT on an NVIDIA GPU; artifact: `.engine` (for this GPU and TensorRT version)."""

    name = "tensorrt"
    #: channel pruning keeps channel counts in multiples of this
    channel_multiple = 8
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    auto_precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    formats: tuple[str, ...] = ("engine",)
    #: TensorRT parses standard ONNX only; it fuses attention and normalizations itself
    fusions = "portable"
    quant_modes: tuple[str, ...] = ("static",)

    def precision_refusal(self, precision: str) -> str | None:
        return unlisted_precision(self, precision)

    @property
    def quant_spec(self) -> QuantSpec:
        """TensorRT explicit quantization: symmetric int8, per-channel weights."""
        from passes.quantize.spec import TENSORRT_SPEC

        return TENSORRT_SPEC

    def __init__(
        self,
        *,
        precision: str | None = None,
        batch: int = 1,
        max_batch: int | None = None,
        device_profile: DeviceProfile | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        shape_ranges: Mapping[str, ShapeRange] | None = None,
        use_dla: bool = True,
        timing_cache: Path | None = None,
    ) -> None:
        """`timing_cache`: the file to load and save kernel timings; default `<stem>.timing.cache`
        beside the engine (the same file for every build of that stem in that folder)."""
        self.precision = precision
        self.batch = batch
        self.max_batch = max_batch
        self.device_profile = device_profile
        self.input_shapes = dict(input_shapes or {})
        self.shape_ranges = dict(shape_ranges or {})
        self.use_dla = use_dla
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None

    def unavailable_reason(self) -> str | None:
        return probe_tensorrt()

    def settings_for(self, proto: onnx.ModelProto) -> BuilderSettings:
        """The builder settings this target uses for `proto` (see `derive_settings`)."""
        return derive_settings(
            proto,
            precision=self.precision or graph_precision(proto),
            batch=self.batch,
            max_batch=self.max_batch or max(self.batch, DEFAULT_MAX_BATCH),
            device_profile=self.device_profile,
            input_shapes=self.input_shapes,
            shape_ranges=self.shape_ranges,
            use_dla=self.use_dla,
        )

    def _require(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise TargetUnavailable(reason)

    def lower(
        self,
        model: ir.Model,
        out_dir: Path,
        *,
        stem: str,
        fmt: str | None = None,
        settings: BuilderSettings | None = None,
    ) -> EngineArtifact:
        """Build `<stem>.engine` into `out_dir`, atomically; needs TensorRT and a GPU here.

        Kernel timings are loaded from and saved to the timing cache (see
        `__init__`); `report` of the result says what the engine runs in.
        """
        if fmt not in (None, "engine"):
            raise UsageError(
                f"target {self.name} writes only .engine artifacts (got format {fmt!r}); "
                "the ORT format is for the cpu target"
            )
        stem = _check_stem(stem)
        path = Path(out_dir) / f"{stem}.engine"
        self._require()
        proto = ir.to_proto(model)
        for problem in check_onnx_for_tensorrt(proto):
            logger.warning("TensorRT may reject this model: %s", problem)
        settings = settings or self.settings_for(proto)
        cache = self.timing_cache or Path(out_dir) / f"{stem}{TIMING_CACHE_SUFFIX}"
        loader = EngineFromOnnx(proto, settings, name=stem, timing_cache=cache)
        loader.save(path)
        return EngineArtifact(path=path, format="engine", report=engine_report(loader))

    def runner(self, artifact: Path, *, threads: int | None = None) -> TrtRunner:
        """A runner on an `.engine` this target wrote, or on an `.onnx` (built in memory first).

        `threads` is accepted for the Target protocol and ignored: TensorRT runs on the GPU.
        """
        self._require()
        artifact = Path(artifact)
        if artifact.suffix == ".onnx":
            proto = load_onnx_proto(artifact)
            loader = EngineFromOnnx(
                proto, self.settings_for(proto), name=artifact.name, inspect=False
            )
            return TrtRunner(loader, name=artifact.name)
        return TrtRunner(artifact)
