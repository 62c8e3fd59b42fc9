"""Build a serialized TensorRT engine from ONNX bytes (Polygraphy's `EngineFromNetwork` shape).

`EngineFromOnnx(model, settings)` is a loader: calling it parses the model with
TensorRT's ONNX parser into a strongly typed network, applies `BuilderSettings`
and returns the serialized engine's bytes; `.save(path)` writes them
atomically. After a build, `.summary` says what the engine runs in (read back
with the engine inspector) and `.timing_cache` where the timing cache went.
`tensorrt` is imported only when a loader is called.

Written against the TensorRT 10.x and 11.x Python API (NVIDIA's Python API
reference, docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/,
pages named below; not runnable on the machines this was written on, which
have no TensorRT and no GPU):
- infer/Core/Builder.html: `trt.Builder(logger)`, `builder.create_network(flags)`
  with `1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED` where the bindings
  have it (`compat.network_flags`), `create_builder_config()`,
  `create_optimization_profile()`, `build_serialized_network(network, config)`
  → IHostMemory or None, `num_DLA_cores`;
- parsers/Onnx/pyOnnx.html: `trt.OnnxParser(network, logger).parse(bytes)`,
  `num_errors`, `get_error(i)` whose `desc()`, `node_name()`, `node_operator()`
  describe the failure;
- infer/Core/BuilderConfig.html: `config.set_memory_pool_limit(
  MemoryPoolType.WORKSPACE, n)`, `set_flag(BuilderFlag.SPARSE_WEIGHTS |
  GPU_FALLBACK)`, `clear_flag(BuilderFlag.TF32)`, `builder_optimization_level`,
  `default_device_type = DeviceType.DLA`, `DLA_core`, `profiling_verbosity =
  ProfilingVerbosity.DETAILED`, `add_optimization_profile(profile)`,
  `create_timing_cache(bytes)`, `set_timing_cache(cache, ignore_mismatch)`,
  `get_timing_cache()`; infer/Core/TimingCache.html: `cache.serialize()`;
- infer/Core/OptimizationProfile.html: `profile.set_shape(name, min, opt, max)`
  — only for inputs with a dynamic (-1) dimension after parsing;
- infer/Core/Runtime.html, Engine.html, ExecutionContext.html,
  EngineInspector.html: `trt.Runtime(logger).deserialize_cuda_engine(bytes)`,
  `engine.create_execution_context()`, `context.set_input_shape`,
  `engine.create_engine_inspector()`, `inspector.context` (10.x) /
  `inspector.execution_context` (11.x), `inspector.get_engine_information(
  LayerInformationFormat.JSON)`.
No precision flags: FP16, INT8, OBEY_PRECISION_CONSTRAINTS and calibrators are
removed in TensorRT 11 ("Migrating from TensorRT 10.x to 11.x"); the graph's
types and Q/DQ nodes say what runs in which precision (see `settings`).

The logger is a `trt.ILogger` subclass that forwards to Python logging and
keeps the errors, so a failed parse or build raises with TensorRT's own words.

Not byte-deterministic: TensorRT chooses kernels by timing them on the GPU at
hand, so two builds of the same model may differ (same as the `.ort` caveat in
`targets/cpu.py`); the `.onnx` stays the reproducible artifact. An engine runs
only on the GPU model and TensorRT version that built it. The timing cache
(`<stem>.timing.cache` beside the engine) makes a rebuild on the same GPU and
TensorRT version reuse the kernel timings instead of measuring them again.
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
from targets.tensorrt.compat import import_tensorrt, network_flags, require_api
from targets.tensorrt.engine_info import EngineSummary, summarize_engine_json
from targets.tensorrt.settings import BuilderSettings

logger = logging.getLogger(__name__)

__all__ = [
    "EngineFromOnnx",
    "configure_builder",
    "import_tensorrt",
    "inspect_engine",
    "parser_error_line",
    "trt_logger",
]


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
    """Loader: ONNX model (proto or serialized bytes) + BuilderSettings → serialized engine bytes.

    `timing_cache`: a file to load kernel timings from (when it exists) and to
    save them to after a build; None builds without one. `inspect`: read the
    built engine's layers back (`.summary`); it deserializes the engine once
    more, on the same GPU.
    """

    def __init__(
        self,
        model: onnx.ModelProto | bytes,
        settings: BuilderSettings,
        *,
        name: str = "model",
        timing_cache: Path | None = None,
        inspect: bool = True,
    ) -> None:
        self.model = model
        self.settings = settings
        self.name = name
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.inspect = inspect
        self.summary: EngineSummary | None = None
        self.tensorrt_version: str | None = None

    def __call__(self) -> bytes:
        trt = require_api(import_tensorrt())
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
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, log)
        if not parser.parse(data):
            n = parser.num_errors
            first = parser_error_line(parser.get_error(0)) if n else "no error reported"
            more = f" (and {n - 1} more)" if n > 1 else ""
            raise InvalidInput(f"TensorRT's ONNX parser rejected {self.name}: {first}{more}")
        config = builder.create_builder_config()
        configure_builder(trt, builder, network, config, self.settings)
        load_timing_cache(config, self.timing_cache)
        logger.debug("building TensorRT engine for %s with %s", self.name, self.settings)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise InvalidInput(
                f"TensorRT could not build an engine for {self.name}: "
                f"{log.state.last_error() or 'the builder reported no reason'}"
            )
        plan = bytes(memoryview(serialized))
        save_timing_cache(config, self.timing_cache)
        self.tensorrt_version = str(getattr(trt, "__version__", "")) or None
        if self.inspect:
            self.summary = inspect_engine(trt, plan, self.settings)
        return plan

    def save(self, path: Path) -> Path:
        """Build and write the engine to `path` atomically (nothing is left on failure)."""
        data = self()
        atomic_write_bytes(Path(path), data)
        return Path(path)


def configure_builder(
    trt: ModuleType, builder: Any, network: Any, config: Any, settings: BuilderSettings
) -> None:
    """Apply `settings` to a builder config for a parsed, strongly typed `network`.

    Raises InvalidInput when a dynamic network input has no shape range in the
    settings, when a range disagrees with the input's rank, or when an input is
    a shape tensor (its *values* would need a range; edgec does not build
    those); TargetUnavailable when a DLA core is asked for that this TensorRT
    and machine do not have.
    """
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.sparse_weights:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if not settings.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default in TensorRT
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    # DETAILED: the engine inspector then reports each layer's tensor types.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.dla_core is not None:
        _use_dla(trt, builder, config, settings.dla_core)
    _add_profile(builder, network, config, settings)


def _use_dla(trt: ModuleType, builder: Any, config: Any, core: int) -> None:
    available = int(builder.num_DLA_cores)
    if core >= available:
        raise TargetUnavailable(
            f"DLA core {core} requested, this TensorRT and device have {available}: DLA needs "
            "a Jetson Orin NX/AGX with TensorRT 10 up to 10.7 (JetPack 6.1) or 11.4.1+ "
            "(JetPack 7.2.2+); build on the board, or without DLA (use_dla=False)"
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run stay on the GPU


def _add_profile(builder: Any, network: Any, config: Any, settings: BuilderSettings) -> None:
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


def load_timing_cache(config: Any, path: Path | None) -> None:
    """Give the builder a timing cache: `path`'s contents when it holds one, else an empty one.

    A cache TensorRT does not take (another TensorRT version, another GPU, a
    damaged file) is replaced by an empty one, with a warning: the build only
    gets slower.
    """
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, False):
                logger.debug("timing cache %s: %d bytes loaded", path, len(data))
                return
        except Exception as e:  # noqa: BLE001 - the bindings raise on a damaged cache
            logger.debug("timing cache %s refused: %s", path, e)
        logger.warning("TensorRT did not take the timing cache %s; starting a new one", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


def save_timing_cache(config: Any, path: Path | None) -> None:
    """Write the builder's timing cache to `path` atomically (after a successful build)."""
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    atomic_write_bytes(path, bytes(memoryview(cache.serialize())))


def inspect_engine(
    trt: ModuleType, engine_bytes: bytes, settings: BuilderSettings
) -> EngineSummary | None:
    """What the built engine runs in, from TensorRT's engine inspector; None if it cannot say.

    The inspector is given an execution context whose input shapes are the
    profile's optimum, so that types are known for dynamic shapes too. Any
    failure here is logged and leaves the build alone.
    """
    try:
        runtime = trt.Runtime(trt_logger(trt))
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        inspector = engine.create_engine_inspector()
        context = engine.create_execution_context()
        if context is not None:
            for p in settings.profiles:
                if not p.is_static:
                    context.set_input_shape(p.name, p.opt)
            if hasattr(inspector, "execution_context"):  # TensorRT 11.x
                inspector.execution_context = context
            else:  # TensorRT 10.x
                inspector.context = context
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return summarize_engine_json(str(text))
    except Exception as e:  # noqa: BLE001 - the engine is built; the summary is extra
        logger.warning(
            "could not read the engine's layers back (%s); the report leaves them out", e
        )
        return None
