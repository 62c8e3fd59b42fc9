"""Run a serialized TensorRT engine: `TrtRunner`, a Polygraphy-shaped context manager.

Device memory and streams come from NVIDIA's `cuda-python` package (its
runtime bindings: `cuda.bindings.runtime`, or `cuda.cudart` before 12.6; the
latter is gone in 13), imported lazily like `tensorrt` itself. Why not the
alternatives: torch is the CPU build in this project, so torch CUDA tensors are
not there; pycuda needs a compiler toolchain at install time and keeps its own
context, while cuda-python's runtime API shares the device's primary context
with TensorRT (TensorRT's own Python samples use it). Use the cuda-python major
version that matches the TensorRT wheel's CUDA (tensorrt-cu12 → cuda-python
12.x, tensorrt-cu13 → 13.x).

The stream goes to TensorRT as its native handle: `cuda.bindings.utils.
get_cuda_native_handle(stream)` where the bindings have it (cuda-bindings
12.9.1+ and 13, whose release notes deprecate `int(cuda_obj)` for this), else
`int(stream)` (older 12.x, where that is the documented way).

TensorRT 10.x/11.x API used (name-based I/O; the binding-index API is gone
since 10; NVIDIA's Python API reference, infer/Core/Engine.html and
ExecutionContext.html): `trt.Runtime(logger).deserialize_cuda_engine(bytes)`,
`engine.num_io_tensors`, `engine.get_tensor_name(i)`, `engine.get_tensor_mode(
name)` (`TensorIOMode`), `engine.get_tensor_dtype(name)` with `trt.nptype`,
`engine.get_tensor_profile_shape(name, 0)`, `engine.create_execution_context()`,
`context.set_input_shape`, `context.get_tensor_shape`,
`context.set_tensor_address`, `context.execute_async_v3(stream_handle)`.

Host buffers follow the engine's tensor types (`trt.nptype`): an fp16 engine
built from a float16 graph takes and returns float16. A float32 feed for a
float16 input (or the reverse) is converted, as the graph's own input cast
would; any other type mismatch is refused.

One call of `infer` copies the inputs to the device, enqueues the engine, copies
the outputs back and synchronizes the stream, so `last_inference_ms` (and the
latency the pipeline measures) covers host→device, kernels and device→host,
as for the CUDA target's runner. Device buffers are kept between calls and
grown when a larger batch arrives.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from compiler.ground.errors import InvalidInput, TargetUnavailable
from targets.base import check_feeds
from targets.tensorrt.build import trt_logger
from targets.tensorrt.compat import import_tensorrt, require_api

logger = logging.getLogger(__name__)

_FLOATS = {np.dtype(np.float32), np.dtype(np.float16)}

CUDA_PYTHON_HINT = (
    "pip install cuda-python (the major version matching TensorRT's CUDA: 12.x for "
    "tensorrt-cu12, 13.x for tensorrt-cu13); edgec's TensorRT runner uses it for device memory"
)


def import_cudart() -> ModuleType:
    """cuda-python's runtime module, or TargetUnavailable with what to do."""
    try:
        return importlib.import_module("cuda.bindings.runtime")  # cuda-python >= 12.6
    except ImportError:
        pass
    try:
        return importlib.import_module("cuda.cudart")  # cuda-python < 12.6
    except ImportError as e:
        raise TargetUnavailable(f"cuda-python is not installed; {CUDA_PYTHON_HINT}") from e


def stream_handle(stream: Any) -> int:
    """The native `cudaStream_t` address TensorRT's `execute_async_v3` takes."""
    try:
        utils = importlib.import_module("cuda.bindings.utils")
    except ImportError:
        utils = None
    get_handle = getattr(utils, "get_cuda_native_handle", None)
    if get_handle is not None:  # cuda-bindings 12.9.1+ / 13: int(cuda_obj) is deprecated
        return int(get_handle(stream))
    return int(stream)  # older cuda-python 12.x


def cuda_call(cudart: ModuleType, result: tuple[Any, ...], what: str) -> Any:
    """Unpack cuda-python's `(error, *values)`; raise TargetUnavailable on an error."""
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            text = cudart.cudaGetErrorString(err)[1].decode()
        except Exception:  # noqa: BLE001
            text = str(err)
        raise TargetUnavailable(f"CUDA {what} failed: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_device_problem() -> str | None:
    """None when cuda-python finds a CUDA device here, else a one-line reason."""
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


class _DeviceBuffer:
    """One cudaMalloc'd block, grown (never shrunk) on demand."""

    def __init__(self) -> None:
        self.ptr = 0
        self.capacity = 0

    def ensure(self, cudart: ModuleType, nbytes: int) -> int:
        nbytes = max(nbytes, 1)  # TensorRT wants a non-null address even for empty tensors
        if nbytes > self.capacity:
            self.free(cudart)
            self.ptr = int(cuda_call(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self.capacity = nbytes
        return self.ptr

    def free(self, cudart: ModuleType) -> None:
        if self.ptr:
            cudart.cudaFree(self.ptr)  # errors while freeing change nothing for the caller
        self.ptr, self.capacity = 0, 0


class TrtRunner:
    """A TensorRT execution context on one engine; use as a context manager.

    `engine` is a path to a `.engine` file, the serialized bytes, or a loader
    returning them (e.g. `EngineFromOnnx(model, settings)`), which is called on
    activation. Inputs must have the engine's dtypes and lie inside its
    optimization profile; otherwise `infer` raises InvalidInput saying which.
    """

    def __init__(
        self, engine: Path | str | bytes | Callable[[], bytes], *, name: str | None = None
    ):
        self._source = Path(engine) if isinstance(engine, str) else engine
        if isinstance(self._source, Path):
            self.path: Path | None = self._source
            self.name = name or self._source.name
        else:
            self.path = None
            self.name = name or "engine"
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.last_inference_ms: float | None = None
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._trt: ModuleType | None = None
        self._cudart: ModuleType | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None

    @property
    def is_active(self) -> bool:
        return self._context is not None

    def _engine_bytes(self) -> bytes:
        src = self._source
        if isinstance(src, Path):
            if not src.is_file():
                raise InvalidInput(f"engine {src} does not exist or is not a file")
            return src.read_bytes()
        if isinstance(src, bytes | bytearray | memoryview):
            return bytes(src)
        return src()

    def activate(self) -> None:
        if self._context is not None:
            return
        trt = require_api(import_tensorrt())
        cudart = import_cudart()
        data = self._engine_bytes()
        log = trt_logger(trt)
        log.state.clear()
        runtime = trt.Runtime(log)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise InvalidInput(
                f"TensorRT cannot load {self.name}: "
                f"{log.state.last_error() or 'not an engine of this TensorRT version'}; engines "
                "run only on the GPU model and TensorRT version that built them: rebuild it "
                "here with edgec compile --target tensorrt"
            )
        names, dtypes = self._io(trt, engine)
        context = engine.create_execution_context()
        if context is None:
            raise TargetUnavailable(
                f"TensorRT cannot create an execution context for {self.name} "
                f"({log.state.last_error() or 'out of GPU memory?'})"
            )
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._trt, self._cudart = trt, cudart
        self._runtime, self._engine, self._context = runtime, engine, context
        self.input_names, self.output_names = names
        self._dtypes = dtypes
        logger.debug("activated TensorRT engine %s: inputs %s", self.name, self.input_names)

    def _io(
        self, trt: ModuleType, engine: Any
    ) -> tuple[tuple[list[str], list[str]], dict[str, Any]]:
        inputs: list[str] = []
        outputs: list[str] = []
        dtypes: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape_io = getattr(engine, "is_shape_inference_io", None)
            if is_input and shape_io is not None and shape_io(name):
                raise InvalidInput(
                    f"{self.name}: input {name!r} is a shape tensor; TrtRunner feeds tensors only"
                )
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtypes[name] = np.dtype(trt.nptype(trt_dtype))
            except TypeError:
                raise InvalidInput(
                    f"{self.name}: tensor {name!r} has type {trt_dtype}, which numpy cannot hold"
                ) from None
            (inputs if is_input else outputs).append(name)
        return (inputs, outputs), dtypes

    def deactivate(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            for buf in self._buffers.values():
                buf.free(cudart)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._buffers.clear()
        self._stream = None
        self._context = self._engine = self._runtime = None

    def __enter__(self) -> TrtRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def _buffer(self, name: str, nbytes: int) -> int:
        assert self._cudart is not None
        return self._buffers.setdefault(name, _DeviceBuffer()).ensure(self._cudart, nbytes)

    def _profile_range(self, name: str) -> str:
        try:
            lo, _, hi = self._engine.get_tensor_profile_shape(name, 0)
            return f"from {tuple(lo)} to {tuple(hi)}"
        except Exception:  # noqa: BLE001 - static inputs have no profile
            return f"{tuple(self._engine.get_tensor_shape(name))}"

    def _host_input(self, name: str, value: np.ndarray) -> np.ndarray:
        """`value` as a contiguous array of the engine's type for input `name`."""
        arr = np.asarray(value)
        want = self._dtypes[name]
        if arr.dtype != want:
            if {arr.dtype, want} != _FLOATS:
                raise InvalidInput(
                    f"input {name!r} of {self.name} is {arr.dtype}, the engine takes {want}"
                )
            arr = arr.astype(want)  # float32 <-> float16, as the graph's input cast would
        return np.ascontiguousarray(arr)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in `output_names` order, as numpy arrays on the host."""
        if self._context is None:
            raise RuntimeError("runner is not active; use it as a context manager (with ... as r)")
        check_feeds(feeds, self.input_names, self.name)
        cudart, context, stream = self._cudart, self._context, self._stream
        assert cudart is not None
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        start = time.perf_counter_ns()
        hosts = []  # keep the input arrays alive until the stream is synchronized
        for name in self.input_names:
            arr = self._host_input(name, feeds[name])
            if not context.set_input_shape(name, arr.shape):
                raise InvalidInput(
                    f"input {name!r} has shape {arr.shape}, outside what {self.name} was built for "
                    f"({self._profile_range(name)}); rebuild with a larger --batch range"
                )
            ptr = self._buffer(name, arr.nbytes)
            if arr.nbytes:
                cuda_call(
                    cudart,
                    cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream),
                    "copy to device",
                )
            context.set_tensor_address(name, ptr)
            hosts.append(arr)
        outputs = []
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InvalidInput(
                    f"output {name!r} of {self.name} has a data-dependent shape {shape}; "
                    "TrtRunner does not run such engines"
                )
            out = np.empty(shape, dtype=self._dtypes[name])
            context.set_tensor_address(name, self._buffer(name, out.nbytes))
            outputs.append(out)
        trt_logger(self._trt).state.clear()
        if not context.execute_async_v3(stream_handle(stream)):
            raise InvalidInput(
                f"TensorRT failed to run {self.name}: "
                f"{trt_logger(self._trt).state.last_error() or 'no reason reported'}"
            )
        for name, out in zip(self.output_names, outputs, strict=True):
            if out.nbytes:
                src = self._buffers[name].ptr
                cuda_call(
                    cudart,
                    cudart.cudaMemcpyAsync(out.ctypes.data, src, out.nbytes, d2h, stream),
                    "copy to host",
                )
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self.last_inference_ms = (time.perf_counter_ns() - start) / 1e6
        del hosts
        return outputs
