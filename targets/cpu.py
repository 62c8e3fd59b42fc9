"""The CPU target: onnxruntime's CPUExecutionProvider.

Lowering writes the optimized model as a self-contained `<stem>.onnx`
(deterministic bytes) and, with `fmt="ort"`, also an ORT-format `<stem>.ort`
for onnxruntime's minimal/mobile builds. The ORT file is optimized offline at
`ORT_ENABLE_EXTENDED`, not `ALL`: the `ALL` level adds layout transforms
(NCHWc) that depend on the building machine's CPU, and an edge artifact must
run on the board, not on the machine that compiled it.

The `.ort` file is NOT byte-deterministic (onnxruntime 1.31): its kernel
type-string table is written from an absl hash map whose iteration order
changes between processes, so two conversions of the same model differ in the
order of a few entries (same meaning; same size in our checks). The `.onnx` is the
reproducible artifact.

`OrtRunner` is the one onnxruntime runner, generic over execution providers;
the CUDA target reuses it. It follows Polygraphy's shape: `activate` on
`__enter__` (creates the session), `deactivate` on `__exit__`, `infer(feeds)`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from compiler.ground.errors import InvalidInput, TargetUnavailable, UsageError
from compiler.ground.io import atomic_path, save_onnx
from compiler.ground.sessions import Level, open_session, session_options
from targets.base import DEFAULT_PRECISIONS, Artifact, check_feeds, unlisted_precision

if TYPE_CHECKING:
    import onnxruntime as ort

    from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

# onnxruntime's own log lines (unused initializers, fallbacks) would go straight
# to stderr; the CLI owns the terminal, so sessions only log errors.
_ORT_LOG_SEVERITY = 3

#: float feeds are cast to the float type an input declares (a float16 graph takes float32 data)
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_ORT_FLOATS: dict[str, np.dtype[Any]] = {
    "tensor(float16)": np.dtype(np.float16),
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
}


def ort_error_line(e: BaseException | str) -> str:
    """onnxruntime's error message without its status prefix, source location and C++ signature.

    "[ONNXRuntimeError] : 1 : FAIL : /src/model.cc:256 onnxruntime::Model::Model(...) Unsupported
    model IR version: 14" → "Unsupported model IR version: 14".
    """
    text = " ".join(str(e).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    locations = list(re.finditer(r"(?:^|(?<=[\s:]))/?[\w./+-]+\.(?:cc|cpp|h|hpp|cu):\d+\s+", text))
    if locations:
        rest = text[locations[-1].end() :]
        # Skip a C++ signature "ns::f(args) const" by matching its parentheses.
        opening = rest.find("(")
        if opening != -1 and " " not in rest[:opening]:
            depth = 0
            for i in range(opening, len(rest)):
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                if depth == 0:
                    rest = rest[i + 1 :].removeprefix(" const").lstrip()
                    break
        text = rest or text
    return text


def lower_onnx(model: ir.Model, out_dir: Path, *, stem: str) -> Artifact:
    """Write `<stem>.onnx` into `out_dir`: atomic, self-contained, byte-deterministic."""
    path = Path(out_dir) / f"{_check_stem(stem)}.onnx"
    save_onnx(model, path)
    return Artifact(path=path, format="onnx")


def _check_stem(stem: str) -> str:
    if not stem or stem in (".", "..") or "/" in stem or "\\" in stem or "\0" in stem:
        raise UsageError(f"artifact name {stem!r} must be a plain file name without folders")
    return stem


def _session_options(threads: int | None, level: Level) -> ort.SessionOptions:
    if threads is not None and threads < 1:
        raise UsageError(
            f"threads must be at least 1 (got {threads}); leave it unset for the default"
        )
    return session_options(threads=threads, level=level, log_severity=_ORT_LOG_SEVERITY)


class OrtRunner:
    """An onnxruntime session on one model, for any list of execution providers.

    `model` is a path to an `.onnx`/`.ort` file or a serialized ONNX model
    (`proto.SerializeToString()`); messages name the file, or `name` ("the
    model" by default for bytes). Use as a context manager. `providers[0]` is
    the one asked for: if onnxruntime silently falls back from it (a CUDA
    library missing), activation raises TargetUnavailable instead of measuring
    the CPU under the wrong name. `provider_options` (one dict per provider)
    and `session_config` (session configuration entries) are passed to
    onnxruntime as they are; the CPU target sets neither.
    """

    def __init__(
        self,
        model: Path | str | bytes,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        level: Level = "all",
        name: str | None = None,
        provider_options: Sequence[Mapping[str, str]] | None = None,
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        if not providers:
            raise ValueError("OrtRunner needs at least one execution provider")
        if isinstance(model, bytes):
            self.path: Path | None = None
            self._model_bytes: bytes | None = model
            self.name = name or "the model"
        else:
            self.path = Path(model)
            self._model_bytes = None
            self.name = name or self.path.name
        self.providers = tuple(providers)
        self.threads = threads
        self.level = level
        self.provider_options = None if provider_options is None else list(provider_options)
        self.session_config = dict(session_config or {})
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.last_inference_ms: float | None = None
        self._session: ort.InferenceSession | None = None
        self._input_floats: dict[str, np.dtype[Any] | None] = {}

    @property
    def is_active(self) -> bool:
        return self._session is not None

    def activate(self) -> None:

        if self._session is not None:
            return
        if self.path is not None and not self.path.is_file():
            raise InvalidInput(f"artifact {self.path} does not exist or is not a file")
        model = str(self.path) if self._model_bytes is None else self._model_bytes
        opts = _session_options(self.threads, self.level)
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, value)
        try:
            session = open_session(
                model, opts, providers=self.providers, provider_options=self.provider_options
            )
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise InvalidInput(f"onnxruntime cannot load {self.name}: {ort_error_line(e)}") from e
        wanted = self.providers[0]
        if wanted not in session.get_providers():
            raise TargetUnavailable(
                f"onnxruntime fell back from {wanted} to {', '.join(session.get_providers())}; "
                "check the provider's libraries and drivers, or choose another --target"
            )
        self._session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self._input_floats = {i.name: _ORT_FLOATS.get(i.type) for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]
        logger.debug("activated %s on %s (threads=%s)", self.name, wanted, self.threads)

    def deactivate(self) -> None:
        self._session = None

    def __enter__(self) -> OrtRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in `output_names` order, as numpy arrays on the host."""
        if self._session is None:
            raise RuntimeError("runner is not active; use it as a context manager (with ... as r)")
        check_feeds(feeds, self.input_names, self.name)
        feeds = self.cast_feeds(feeds)
        start = time.perf_counter_ns()
        try:
            outputs = self._session.run(None, dict(feeds))
        except Exception as e:
            raise InvalidInput(f"inference on {self.name} failed: {ort_error_line(e)}") from e
        self.last_inference_ms = (time.perf_counter_ns() - start) / 1e6
        return [np.asarray(o) for o in outputs]

    def cast_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`feeds` with each float array cast to the float type its input declares."""
        if self._session is None:
            raise RuntimeError("runner is not active; use it as a context manager (with ... as r)")
        out: dict[str, np.ndarray] = {}
        for name, x in feeds.items():
            x = np.asarray(x)
            target = self._input_floats.get(name)
            if target is not None and x.dtype in _FLOATS and x.dtype != target:
                x = x.astype(target)
            out[name] = x
        return out


class CpuTarget:
    """onnxruntime on the CPU; artifacts: `.onnx`, or `.ort` with `fmt="ort"`."""

    name = "cpu"
    #: channel pruning keeps channel counts in multiples of this
    channel_multiple = 16
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    #: fp16 is not in auto: x86 CPUs without AVX512-FP16 compute it no faster than fp32
    auto_precisions: tuple[str, ...] = ("fp32", "int8")
    formats: tuple[str, ...] = ("onnx", "ort")
    fusions = "onnxruntime"
    quant_modes: tuple[str, ...] = ("static", "dynamic")
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def precision_refusal(self, precision: str) -> str | None:
        return unlisted_precision(self, precision)

    @property
    def quant_spec(self) -> QuantSpec:
        """U8S8 Q/DQ, which onnxruntime fuses into its QLinear* kernels."""
        from passes.quantize.spec import CPU_SPEC

        return CPU_SPEC

    def unavailable_reason(self) -> str | None:
        return None

    def lower(
        self, model: ir.Model, out_dir: Path, *, stem: str, fmt: str | None = None
    ) -> Artifact:
        fmt = fmt or "onnx"
        if fmt not in self.formats:
            raise UsageError(
                f"target {self.name} cannot write format {fmt!r}; choose one of {self.formats}"
            )
        onnx_artifact = lower_onnx(model, out_dir, stem=stem)
        if fmt == "onnx":
            return onnx_artifact
        return _convert_to_ort_format(onnx_artifact.path, Path(out_dir) / f"{stem}.ort")

    def runner(self, artifact: Path, *, threads: int | None = None) -> OrtRunner:
        return OrtRunner(artifact, providers=self.providers, threads=threads)


def _convert_to_ort_format(onnx_path: Path, final: Path) -> Artifact:
    """Optimize `onnx_path` offline and save the result in ORT format, atomically."""

    opts = _session_options(None, "extended")
    opts.add_session_config_entry("session.save_model_format", "ORT")
    with atomic_path(final) as tmp:
        opts.optimized_model_filepath = str(tmp)
        try:
            open_session(onnx_path, opts)
        except Exception as e:
            raise InvalidInput(
                f"onnxruntime cannot convert {onnx_path.name} to ORT format: {ort_error_line(e)}"
            ) from e
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise InvalidInput(f"onnxruntime wrote no ORT-format file for {onnx_path.name}")
    return Artifact(path=final, format="ort")
