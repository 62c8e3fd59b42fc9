"""Build a serialized TensorRT engine from ONNX bytes (Polygraphy's `EngineFromNetwork` shape).

`EngineFromOnnx(model, settings)` is a loader: calling it parses the model with
TensorRT's ONNX parser, applies `BuilderSettings` and returns the serialized
engine's bytes; `.save(path)` writes them atomically. `tensorrt` is imported
only when a loader is called.

Written against the TensorRT 10.x Python API (not runnable on the machines
this was written on, which have no TensorRT and no GPU):
- `trt.Builder(logger)`, `builder.create_network(0)` — networks are always
  explicit-batch in TensorRT 10, `EXPLICIT_BATCH` is deprecated and ignored;
- `trt.OnnxParser(network, logger).parse(bytes)`, `num_errors`, `get_error(i)`
  whose `desc()`, `node_name()`, `node_operator()` describe the failure;
- `builder.create_builder_config()`, `config.set_flag(trt.BuilderFlag.FP16 |
  INT8 | SPARSE_WEIGHTS | OBEY_PRECISION_CONSTRAINTS)`, `config.clear_flag(TF32)`,
  `config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)`;
- `builder.create_optimization_profile()`, `profile.set_shape(name, min, opt,
  max)`, `config.add_optimization_profile(profile)` — only for inputs with a
  dynamic (-1) dimension after parsing;
- `builder.build_serialized_network(network, config)` → IHostMemory or None.
The logger is a `trt.ILogger` subclass that forwards to Python logging and
keeps the errors, so a failed parse or build raises with TensorRT's own words.

Not byte-deterministic: TensorRT chooses kernels by timing them on the GPU at
hand, so two builds of the same model may differ (same as the `.ort` caveat in
`targets/cpu.py`); the `.onnx` stays the reproducible artifact. An engine runs
only on the GPU model and TensorRT version that built it.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from compiler.ground.errors import InvalidInput, TargetUnavailable
from compiler.ground.io import atomic_write_bytes
from targets.tensorrt.settings import BuilderSettings

logger = logging.getLogger(__name__)

SUPPORTED_MAJOR = 10
INSTALL_HINT = (
    "pip install '.[tensorrt]' on a machine with an NVIDIA GPU (TensorRT wheels come from "
    "NVIDIA's package index), or use --target cuda or --target cpu"
)


def import_tensorrt() -> ModuleType:
    """`import tensorrt`, or TargetUnavailable with what to do."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TargetUnavailable(f"TensorRT is not installed ({e}); {INSTALL_HINT}") from e
    except OSError as e:  # the wheel is there, its shared libraries are not
        raise TargetUnavailable(f"TensorRT cannot load its libraries ({e}); {INSTALL_HINT}") from e
    return trt


class _Log:
    """Python-side state of the TensorRT logger: the errors since `clear()`."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def clear(self) -> None:
        self.errors.clear()

    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None


@functools.cache
def trt_logger(trt: ModuleType) -> Any:
    """The process's one TensorRT logger (TensorRT warns when builders and runtimes differ).

    Maps TensorRT's severities to logging levels (INFO and VERBOSE go to DEBUG:
    the CLI owns the terminal) and records error messages in `.state`.
    """
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG - 5,
    }

    ilogger: Any = trt.ILogger  # a class of the lazily imported module: untyped here

    class EdgecTrtLogger(ilogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required by TensorRT's Python bindings
            self.state = _Log()

        def log(self, sev: Any, msg: str) -> None:
            level = levels.get(sev, logging.DEBUG)
            if level >= logging.ERROR:
                self.state.errors.append(" ".join(str(msg).split()))
            if logger.isEnabledFor(level):
                logger.log(level, "TensorRT: %s", msg)

    return EdgecTrtLogger()


def parser_error_line(error: Any) -> str:
    """One line from a `trt.ParserError`: node, operator and description."""

    def call(name: str) -> str:
        fn = getattr(error, name, None)
        try:
            return str(fn()) if callable(fn) else ""
        except Exception:  # noqa: BLE001 - older bindings lack some accessors
            return ""

    desc = " ".join((call("desc") or str(error)).split())
    node, op = call("node_name"), call("node_operator")
    where = f"node {node!r}" if node else ""
    if op:
        where = f"{where} ({op})" if where else f"a {op} node"
    return f"{where}: {desc}" if where else desc


class EngineFromOnnx:
    """Loader: ONNX model (proto or serialized bytes) + BuilderSettings → serialized engine bytes."""

    def __init__(
        self, model: onnx.ModelProto | bytes, settings: BuilderSettings, *, name: str = "model"
    ) -> None:
        self.model = model
        self.settings = settings
        self.name = name

    def __call__(self) -> bytes:
        trt = import_tensorrt()
        log = trt_logger(trt)
        log.state.clear()
        data = (
            self.model
            if isinstance(self.model, bytes)
            else self.model.SerializeToString(deterministic=True)
        )
        try:  # without a usable GPU the bindings raise (pybind's "returned nullptr") or give None
            builder = trt.Builder(log)
        except Exception:  # noqa: BLE001
            builder = None
        if builder is None:
            raise TargetUnavailable(
                f"TensorRT cannot create a builder ({log.state.last_error() or 'no usable GPU'}); "
                "check the NVIDIA driver and GPU"
            )
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, log)
        if not parser.parse(data):
            n = parser.num_errors
            first = parser_error_line(parser.get_error(0)) if n else "no error reported"
            more = f" (and {n - 1} more)" if n > 1 else ""
            raise InvalidInput(f"TensorRT's ONNX parser rejected {self.name}: {first}{more}")
        config = builder.create_builder_config()
        configure_builder(trt, builder, network, config, self.settings)
        logger.debug("building TensorRT engine for %s with %s", self.name, self.settings)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise InvalidInput(
                f"TensorRT could not build an engine for {self.name}: "
                f"{log.state.last_error() or 'the builder reported no reason'}"
            )
        return bytes(memoryview(serialized))

    def save(self, path: Path) -> Path:
        """Build and write the engine to `path` atomically (nothing is left on failure)."""
        data = self()
        atomic_write_bytes(Path(path), data)
        return Path(path)


def _flag(trt: ModuleType, name: str) -> Any:
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise TargetUnavailable(
            f"this TensorRT ({getattr(trt, '__version__', '?')}) has no BuilderFlag.{name}; "
            f"edgec's tensorrt target needs TensorRT {SUPPORTED_MAJOR}.x"
        )
    return flag


def configure_builder(
    trt: ModuleType, builder: Any, network: Any, config: Any, settings: BuilderSettings
) -> None:
    """Apply `settings` to a builder config for a parsed `network`.

    Raises InvalidInput when a dynamic network input has no shape range in the
    settings, when a range disagrees with the input's rank, or when an input is
    a shape tensor (its *values* would need a range; edgec does not build those).
    """
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for enabled, name in (
        (settings.fp16, "FP16"),
        (settings.int8, "INT8"),
        (settings.sparse_weights, "SPARSE_WEIGHTS"),
        (settings.obey_precision, "OBEY_PRECISION_CONSTRAINTS"),
    ):
        if enabled:
            config.set_flag(_flag(trt, name))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if not settings.tf32 and tf32 is not None:
        config.clear_flag(tf32)  # on by default in TensorRT
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    if settings.dla_core is not None:
        if settings.dla_core >= builder.num_DLA_cores:
            raise TargetUnavailable(
                f"DLA core {settings.dla_core} requested, this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(_flag(trt, "GPU_FALLBACK"))

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        name, dims = tensor.name, tuple(tensor.shape)
        if tensor.is_shape_tensor:
            raise InvalidInput(
                f"input {name!r} is a shape tensor (its values set shapes inside the network); "
                "edgec's tensorrt target does not build profiles for those"
            )
        if all(d >= 0 for d in dims):
            continue
        shape = settings.profile(name)
        if shape is None:
            raise InvalidInput(
                f"input {name!r} has dynamic shape {dims} but no shape range was given; "
                "give its shape explicitly (--input-shape)"
            )
        if len(shape.opt) != len(dims):
            raise InvalidInput(
                f"shape range {shape.opt} for {name!r} has rank {len(shape.opt)}, "
                f"the network's input has rank {len(dims)}"
            )
        if profile is None:
            profile = builder.create_optimization_profile()
        profile.set_shape(name, shape.min, shape.opt, shape.max)
    if profile is not None:
        config.add_optimization_profile(profile)
