"""The TensorRT target: ONNX → TensorRT 10.x engine (`<stem>.engine`) and a runner for it.

TensorRT is an optional extra (`pip install '.[tensorrt]'`) and needs an NVIDIA
GPU; `unavailable_reason()` says, in one line, what is missing here. Modules:
`settings` (what to ask the builder for; pure Python), `build`
(`EngineFromOnnx`), `runner` (`TrtRunner`). `tensorrt` and `cuda-python` are
imported only when an engine is built or run.

How the pipeline passes its flags: `targets.registry` builds `TensorRTTarget()` with
defaults (precision read from the model: Q/DQ → int8, float16 weights → fp16,
else fp32; batch 1, engine valid up to batch 16, the pipeline's evaluation
batch). A caller that knows better constructs `TensorRTTarget(precision=...,
batch=..., max_batch=..., device_profile=...)` or passes ready `settings=` to
`lower`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import onnx_ir as ir

from compiler.ground.errors import TargetUnavailable, UsageError
from compiler.ground.io import load_onnx_proto
from targets.base import DEFAULT_PRECISIONS, Artifact
from targets.cpu import _check_stem
from targets.profiles import DeviceProfile
from targets.tensorrt.build import INSTALL_HINT, SUPPORTED_MAJOR, EngineFromOnnx
from targets.tensorrt.runner import CUDA_PYTHON_HINT, TrtRunner, cuda_call, import_cudart
from targets.tensorrt.settings import (
    BuilderSettings,
    ShapeProfile,
    check_onnx_for_tensorrt,
    derive_settings,
    has_qdq,
)

if TYPE_CHECKING:
    from passes.quantize.spec import QuantSpec

__all__ = [
    "BuilderSettings",
    "EngineFromOnnx",
    "ShapeProfile",
    "TensorRTTarget",
    "TrtRunner",
    "check_onnx_for_tensorrt",
    "derive_settings",
    "probe_tensorrt",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16  # compiler.pipeline.EVAL_BATCH: the evaluation feeds batches this large


@functools.cache
def probe_tensorrt() -> str | None:
    """None when TensorRT 10 and a CUDA device are usable here, else a one-line reason.

    Cached for the process; `probe_tensorrt.cache_clear()` forgets the answer.
    """
    try:
        import tensorrt as trt
    except ImportError:
        return f"TensorRT is not installed; {INSTALL_HINT}"
    except OSError as e:
        return f"TensorRT is installed but cannot load its libraries ({e}); {INSTALL_HINT}"
    version = str(getattr(trt, "__version__", "0"))
    if version.split(".")[0] != str(SUPPORTED_MAJOR):
        return (
            f"TensorRT {version} is installed; edgec's tensorrt target is written for TensorRT "
            f"{SUPPORTED_MAJOR}.x (pip install 'tensorrt>={SUPPORTED_MAJOR},<{SUPPORTED_MAJOR + 1}')"
        )
    try:
        cudart = import_cudart()
    except TargetUnavailable:
        return f"cuda-python is not installed; {CUDA_PYTHON_HINT}"
    try:
        count = cuda_call(cudart, cudart.cudaGetDeviceCount(), "device query")
    except Exception as e:  # noqa: BLE001 - TargetUnavailable, or the driver library missing
        return f"no usable CUDA device ({e}); TensorRT needs an NVIDIA GPU and its driver"
    if not count:
        return "no CUDA device found; TensorRT needs an NVIDIA GPU and its driver"
    return None


def _infer_precision(proto: onnx.ModelProto) -> str:
    if has_qdq(proto):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


class TensorRTTarget:
    """TensorRT on an NVIDIA GPU; artifact: `.engine` (for this GPU and TensorRT version)."""

    name = "tensorrt"
    #: channel pruning keeps channel counts in multiples of this
    channel_multiple = 8
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    formats: tuple[str, ...] = ("engine",)

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
    ) -> None:
        self.precision = precision
        self.batch = batch
        self.max_batch = max_batch
        self.device_profile = device_profile
        self.input_shapes = dict(input_shapes or {})

    def unavailable_reason(self) -> str | None:
        return probe_tensorrt()

    def settings_for(self, proto: onnx.ModelProto) -> BuilderSettings:
        """The builder settings this target uses for `proto` (see `derive_settings`)."""
        return derive_settings(
            proto,
            precision=self.precision or _infer_precision(proto),
            batch=self.batch,
            max_batch=self.max_batch or max(self.batch, DEFAULT_MAX_BATCH),
            device_profile=self.device_profile,
            input_shapes=self.input_shapes,
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
    ) -> Artifact:
        """Build `<stem>.engine` into `out_dir`, atomically; needs TensorRT and a GPU here."""
        if fmt not in (None, "engine"):
            raise UsageError(
                f"target {self.name} writes only .engine artifacts (got format {fmt!r}); "
                "the ORT format is for the cpu target"
            )
        path = Path(out_dir) / f"{_check_stem(stem)}.engine"
        self._require()
        proto = ir.to_proto(model)
        for problem in check_onnx_for_tensorrt(proto):
            logger.warning("TensorRT may reject this model: %s", problem)
        settings = settings or self.settings_for(proto)
        EngineFromOnnx(proto, settings, name=stem).save(path)
        return Artifact(path=path, format="engine")

    def runner(self, artifact: Path, *, threads: int | None = None) -> TrtRunner:
        """A runner on an `.engine` this target wrote, or on an `.onnx` (built in memory first).

        `threads` is accepted for the Target protocol and ignored: TensorRT runs on the GPU.
        """
        self._require()
        artifact = Path(artifact)
        if artifact.suffix == ".onnx":
            proto = load_onnx_proto(artifact)
            loader = EngineFromOnnx(proto, self.settings_for(proto), name=artifact.name)
            return TrtRunner(loader, name=artifact.name)
        return TrtRunner(artifact)
