"""The CUDA target: onnxruntime's CUDAExecutionProvider.

The artifact is the same `.onnx` file as the CPU target's; only the runner
differs. onnxruntime lists 'CUDAExecutionProvider' whenever the GPU wheel is
installed, and silently falls back to the CPU when the CUDA libraries or the
device cannot be loaded. So availability is decided by a probe: a one-node
session on CUDA whose `get_providers()` must still contain CUDA. The probe runs
once per process and its answer is cached.

Provider options (`cuda_provider_options`), the same for every session:

- `use_tf32=0`. onnxruntime's CUDA provider computes float32 MatMul/Gemm and
  cuDNN convolutions in TF32 by default (`use_tf32` defaults to true in
  `onnxruntime/core/providers/cuda/cuda_execution_provider_info.h`: "By
  default, enable TF32 to speed up float GEMM/MatMul or cuDNN convolution";
  option added in microsoft/onnxruntime#19357 and #19426). TF32 rounds the
  inputs to a 10-bit mantissa on Ampere and newer GPUs, so an "fp32" artifact
  and the FP32 baseline every candidate is judged against would not be FP32,
  nor comparable with the CPU target's numbers.
- `enable_cuda_graph` only on the timing session when asked for
  (`CudaTarget(cuda_graph=True)`; off by default), see Latency.

CPU fallback: a node the CUDA provider has no kernel for runs on the CPU
without a word. The session option `session.disable_cpu_ep_fallback=1` is NOT
used: onnxruntime then fails every session with any node on the CPU
(`inference_session.cc`: "This session contains graph nodes that are assigned
to the default CPU EP, but fallback to CPU EP has been explicitly disabled"),
and the CUDA provider itself places shape computations on the CPU on purpose
(`GetCpuPreferredNodes`, `core/framework/fallback_cpu_capability.cc`: nodes
fed only by Shape/Size outputs, graph inputs and small initializers), so every
model with a dynamic dimension (the zoo's batch, BERT's sequence) would be
refused. Instead every session records its node placement
(`session.record_ep_graph_assignment_info=1`, read back with
`InferenceSession.get_provider_graph_assignment_info()`: a structured list,
no verbose log to parse, no second session). A node on the CPU is deliberate
when it computes shapes by onnxruntime's own rule (all inputs are constants,
graph inputs, Shape/Size outputs or outputs of other such nodes, at least one
of them shape-derived) or touches only integer/bool tensors; any other node on
the CPU is one the CUDA provider cannot run, and activation raises
InvalidInput (exit 4) naming its op and node. Nodes onnxruntime created itself
(names not in the model) are judged by op type.

INT8 is refused (`precision_refusal`): onnxruntime's documentation, "Quantize
ONNX Models" → "Quantization on GPU"
(onnxruntime.ai/docs/performance/model-optimizations/quantization.html), says
"ONNX Runtime leverages the TensorRT Execution Provider for quantization on GPU
now"; the CUDA provider registers QuantizeLinear/DequantizeLinear and
MatMulInteger but no QLinearConv/ConvInteger/QLinearMatMul kernels
(docs/OperatorKernels.md; checked in the onnxruntime-gpu 1.31.1 provider
library), so a Q/DQ model would run float kernels between extra quantize and
dequantize steps: slower than FP32, with INT8's error. `--target tensorrt`
runs INT8.

FP16: a float16 graph (float16 weights, activations, possibly inputs and
outputs) is lowered as it is; the runner casts float feeds to the float type
each input declares (between float types only; integers are never converted),
and returns outputs in the model's own types.

Latency: `CudaRunner.infer` returns host numpy arrays (for accuracy), so each
call copies inputs in and outputs out. `CudaRunner.bound_call(feeds)` is what
`targets.latency.timed_call` times instead: IO binding with the inputs copied
to the device once (`OrtValue.ortvalue_from_numpy(x, "cuda", 0)`) and the
outputs bound to the device, so a timed call is the kernels alone. With CUDA
graphs on, the bound call runs on a second session with `enable_cuda_graph=1`,
outputs preallocated on the device (the graph replays fixed addresses; the
constraints are in onnxruntime's CUDA provider page, "Using CUDA Graphs"); where
onnxruntime refuses that session (control flow, nodes off CUDA) the plain bound
call is timed and `timing_mode` says so.

Not yet run on a GPU (no device was lent when this was written): the CUDA-only
paths (options accepted, placement on a real CUDA session, CUDA graphs) are what
the `gpu`-marked tests and `bench/gpu_check.py` check; everything else runs in
the CPU tests, on the CPU provider.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from compiler.ground.errors import InvalidInput, TargetUnavailable, UsageError
from compiler.ground.sessions import open_session, session_options
from targets.base import Artifact, unlisted_precision
from targets.cpu import OrtRunner, lower_onnx, ort_error_line

if TYPE_CHECKING:
    from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

_PROVIDER = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Session configuration of every CUDA session: onnxruntime records each node's provider.
SESSION_CONFIG: dict[str, str] = {"session.record_ep_graph_assignment_info": "1"}

INT8_REFUSAL = (
    "target cuda does not run --precision int8: onnxruntime's CUDA provider has no int8 "
    "convolution kernels and would run the Q/DQ model as float kernels plus quantize/dequantize "
    "steps (onnxruntime runs INT8 on NVIDIA GPUs through TensorRT); use --target tensorrt for "
    "int8, or --precision fp16 or fp32 on cuda"
)

# CUDA kernels whose outputs live in host memory: where onnxruntime's shape math starts.
_HOST_OUTPUT_OPS = frozenset({"Shape", "Size"})
# Ops onnxruntime keeps on the CPU for shape math; judges nodes it created itself.
_SHAPE_OPS = frozenset(
    {
        "Abs", "Add", "Cast", "Ceil", "Concat", "ConstantOfShape", "Div", "Equal", "Expand",
        "Floor", "Gather", "Greater", "Identity", "Less", "Max", "Min", "Mod", "Mul", "Neg",
        "Not", "Range", "ReduceProd", "Reshape", "Shape", "Size", "Slice", "Squeeze", "Sub",
        "Unsqueeze", "Where",
    }
)  # fmt: skip
_INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.BOOL, onnx.TensorProto.INT8, onnx.TensorProto.INT16,
        onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    }
)  # fmt: skip


def cuda_provider_options(*, cuda_graph: bool = False, device_id: int = 0) -> dict[str, str]:
    """The CUDA provider options of every edgec session (see the module docstring)."""
    return {
        "device_id": str(device_id),
        "use_tf32": "0",
        "enable_cuda_graph": "1" if cuda_graph else "0",
    }


class CudaTarget:
    """onnxruntime on an NVIDIA GPU; artifact: `.onnx`.

    `cuda_graph=True` times with CUDA graph capture where onnxruntime allows it
    (off by default; the registry builds the default).
    """

    name = "cuda"
    #: channel pruning keeps channel counts in multiples of this
    channel_multiple = 8
    #: no int8: see `precision_refusal`
    precisions: tuple[str, ...] = ("fp32", "fp16", "auto")
    auto_precisions: tuple[str, ...] = ("fp32", "fp16")
    formats: tuple[str, ...] = ("onnx",)
    fusions = "onnxruntime"
    quant_modes: tuple[str, ...] = ("static",)
    providers: tuple[str, ...] = (_PROVIDER,)

    def __init__(self, *, cuda_graph: bool = False) -> None:
        self.cuda_graph = cuda_graph

    @property
    def quant_spec(self) -> QuantSpec:
        """Symmetric int8, zero point 0: what NVIDIA GPU int8 kernels expect."""
        from passes.quantize.spec import TENSORRT_SPEC

        return TENSORRT_SPEC

    def precision_refusal(self, precision: str) -> str | None:
        """None when this target runs `precision`, else a one-line reason with what to use."""
        if precision == "int8":
            return INT8_REFUSAL
        return unlisted_precision(self, precision)

    def unavailable_reason(self) -> str | None:
        return probe_cuda()

    def lower(
        self, model: ir.Model, out_dir: Path, *, stem: str, fmt: str | None = None
    ) -> Artifact:
        if fmt not in (None, "onnx"):
            raise UsageError(
                f"target {self.name} writes only .onnx artifacts (got format {fmt!r}); "
                "the ORT format is for the cpu target"
            )
        return lower_onnx(model, out_dir, stem=stem)

    def runner(self, artifact: Path, *, threads: int | None = None) -> CudaRunner:
        reason = self.unavailable_reason()
        if reason:
            raise TargetUnavailable(reason)
        return CudaRunner(artifact, threads=threads, cuda_graph=self.cuda_graph)


class CudaRunner(OrtRunner):
    """`OrtRunner` on the CUDA provider with edgec's options, the placement check,
    float-type-aware feeds and an IO-bound call for timing.

    `providers` and `device` exist so the same code runs on the CPU provider
    (`providers=("CPUExecutionProvider",), device="cpu"`, as the tests do):
    onnxruntime binds inputs and outputs to "cpu" too. CUDA provider options
    are only passed to the CUDA provider. `check_placement=False` runs a model
    with CPU fallbacks anyway (`placements` still lists them; for diagnosis).
    """

    def __init__(
        self,
        model: Path | str | bytes,
        *,
        threads: int | None = None,
        cuda_graph: bool = False,
        providers: Sequence[str] = (_PROVIDER,),
        device: str = "cuda",
        device_id: int = 0,
        name: str | None = None,
        check_placement: bool = True,
    ) -> None:
        on_cuda = bool(providers) and providers[0] == _PROVIDER
        if cuda_graph and not on_cuda:
            raise ValueError("CUDA graphs need the CUDA provider")
        options = None
        if on_cuda:  # one dict per provider; a CPU provider after CUDA gets none
            options = [cuda_provider_options(device_id=device_id)] + [{}] * (len(providers) - 1)
        super().__init__(
            model,
            providers=providers,
            threads=threads,
            name=name,
            provider_options=options,
            session_config=SESSION_CONFIG,
        )
        self.cuda_graph = cuda_graph
        self.device = device
        self.device_id = device_id
        self.check_placement = check_placement
        #: how the last `bound_call` runs: "io_binding" or "cuda_graph"
        self.timing_mode: str | None = None
        #: (provider, op type, node name) of every node, after activation
        self.placements: list[Placement] = []

    def activate(self) -> None:
        if self.is_active:
            return
        super().activate()
        self.placements = node_placements(self._session)
        wanted = self.providers[0]
        if not self.check_placement or not any(p.provider != wanted for p in self.placements):
            return
        fallbacks = cpu_fallbacks(self.placements, self._model_proto(), wanted)
        if fallbacks:
            self.deactivate()
            raise InvalidInput(fallback_message(fallbacks, self.name, wanted))

    def __enter__(self) -> CudaRunner:
        self.activate()
        return self

    def bound_call(
        self, feeds: Mapping[str, np.ndarray], *, cuda_graph: bool | None = None
    ) -> BoundCall:
        """A call on `feeds` with inputs already on the device and outputs left there.

        With CUDA graphs (`cuda_graph`, default: the runner's), the call replays
        a captured graph where onnxruntime allows it; its `mode` (and the
        runner's `timing_mode`) says which it is.
        """
        feeds = self.cast_feeds(feeds)  # raises unless active
        call = (
            self._graph_call(feeds)
            if (self.cuda_graph if cuda_graph is None else cuda_graph)
            else None
        )
        if call is None:
            try:
                call = BoundCall(self._session, feeds, device=self.device, device_id=self.device_id)
            except Exception as e:  # onnxruntime's own exception types
                raise InvalidInput(f"cannot bind inputs of {self.name}: {ort_error_line(e)}") from e
        self.timing_mode = call.mode
        return call

    def _graph_call(self, feeds: dict[str, np.ndarray]) -> BoundCall | None:
        """The bound call on a CUDA-graph session, or None (logged) where onnxruntime refuses."""
        if self.providers[0] != _PROVIDER:
            raise ValueError("CUDA graphs need the CUDA provider")
        outputs = self.infer(feeds)  # the output shapes and types the graph writes
        model = str(self.path) if self.path is not None else self._model_bytes
        assert model is not None
        opts = session_options(threads=self.threads, level=self.level, log_severity=3)
        try:
            session = open_session(
                model,
                opts,
                providers=self.providers,
                provider_options=[cuda_provider_options(cuda_graph=True, device_id=self.device_id)],
            )
            call = BoundCall(session, feeds, device=self.device, device_id=self.device_id)
            call.preallocate_outputs(outputs)
            call()  # the first runs capture the graph
        except Exception as e:
            logger.warning(
                "%s: no CUDA graph (%s); timing with IO binding", self.name, ort_error_line(e)
            )
            return None
        call.mode = "cuda_graph"
        return call

    def _model_proto(self) -> onnx.ModelProto:
        if self._model_bytes is not None:
            return onnx.load_from_string(self._model_bytes)
        assert self.path is not None
        return onnx.load(str(self.path), load_external_data=False)


class BoundCall:
    """One inference on fixed feeds through onnxruntime's IO binding.

    The feeds are copied to `device` once (on "cpu" onnxruntime uses the arrays
    in place); each call runs the model and leaves the outputs on the device.
    `outputs()` copies the last call's outputs to the host.
    """

    def __init__(
        self, session: Any, feeds: Mapping[str, np.ndarray], *, device: str, device_id: int = 0
    ) -> None:
        import onnxruntime as ort

        self._session = session  # held: a CUDA-graph session lives as long as its call
        self._device = device
        self._device_id = device_id
        #: "io_binding", or "cuda_graph" when the session replays a captured graph
        self.mode = "io_binding"
        self._binding = session.io_binding()
        self._values: list[Any] = []  # keeps the bound OrtValues (and arrays) alive
        for name, x in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, device_id)
            self._values.append(value)
            self._binding.bind_ortvalue_input(name, value)
        self.output_names = [o.name for o in session.get_outputs()]
        for name in self.output_names:
            self._binding.bind_output(name, device, device_id)

    def preallocate_outputs(self, like: Sequence[np.ndarray]) -> None:
        """Bind each output to a fixed device buffer shaped like `like` (CUDA graphs replay
        fixed addresses)."""
        import onnxruntime as ort

        self._binding.clear_binding_outputs()
        for name, ref in zip(self.output_names, like, strict=True):
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(ref.shape), ref.dtype, self._device, self._device_id
            )
            self._values.append(value)
            self._binding.bind_ortvalue_output(name, value)

    def __call__(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def outputs(self) -> list[np.ndarray]:
        """The last call's outputs, copied to the host."""
        return [np.asarray(o) for o in self._binding.copy_outputs_to_cpu()]


@dataclass(frozen=True)
class Placement:
    """Where onnxruntime runs one node: its provider, op type and node name ('' if unnamed)."""

    provider: str
    op_type: str
    name: str


def node_placements(session: Any) -> list[Placement]:
    """Every node's provider, from a session opened with `SESSION_CONFIG`.

    Empty when this onnxruntime cannot report it (no
    `get_provider_graph_assignment_info`: older releases) or the session did not record it.
    """
    report = getattr(session, "get_provider_graph_assignment_info", None)
    if report is None:
        logger.debug("this onnxruntime does not report node placement; not checked")
        return []
    try:
        subgraphs = report()
    except Exception as e:  # recording was not enabled for this session
        logger.debug("no node placement: %s", ort_error_line(e))
        return []
    return [
        Placement(provider=sg.ep_name, op_type=n.op_type, name=n.name)
        for sg in subgraphs
        for n in sg.get_nodes()
    ]


def cpu_fallbacks(
    placements: Sequence[Placement], model: onnx.ModelProto, wanted: str
) -> list[Placement]:
    """The nodes placed off `wanted` that are not shape math (see the module docstring)."""
    off = [p for p in placements if p.provider != wanted]
    if not off:
        return []
    off_names = {p.name for p in off if p.name}
    by_name = {n.name for n in model.graph.node if n.name}
    deliberate = _shape_math_nodes(model, off_names)
    fallbacks = []
    for p in off:
        if p.op_type in _HOST_OUTPUT_OPS or p.name in deliberate:
            continue
        if p.name in by_name or p.op_type not in _SHAPE_OPS:
            fallbacks.append(p)
    return fallbacks


def _shape_math_nodes(model: onnx.ModelProto, off_names: set[str]) -> set[str]:
    """Names of the nodes in `off_names` that onnxruntime would keep on the CPU on purpose."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    integer = _integer_tensors(model)
    host: set[str] = set()
    deliberate: set[str] = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        if node.op_type in _HOST_OUTPUT_OPS:
            host.update(node.output)
        if node.name not in off_names:
            continue
        inputs = [i for i in node.input if i]
        chained = all(i in constants or i in host for i in inputs) and any(
            i in host for i in inputs
        )
        if chained or all(t in integer for t in [*inputs, *node.output]):
            deliberate.add(node.name)
            host.update(node.output)
    return deliberate


def _integer_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors whose element type is integer or bool (as far as ONNX knows)."""
    graph = model.graph
    infos = [*graph.input, *graph.value_info, *graph.output]
    if not graph.value_info:
        with contextlib.suppress(Exception):  # over 2 GiB or odd: the declared types will do
            inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
            infos = [*graph.input, *inferred, *graph.output]
    names = {v.name for v in infos if v.type.tensor_type.elem_type in _INTEGER_TYPES}
    names |= {t.name for t in graph.initializer if t.data_type in _INTEGER_TYPES}
    return names


def fallback_message(fallbacks: Sequence[Placement], name: str, wanted: str) -> str:
    """One line naming the ops and nodes `wanted` cannot run (the first five)."""
    shown = ", ".join(f"{p.op_type} {p.name!r}" if p.name else p.op_type for p in fallbacks[:5])
    more = f" and {len(fallbacks) - 5} more" if len(fallbacks) > 5 else ""
    return (
        f"onnxruntime's {wanted} has no kernel for {len(fallbacks)} node(s) of {name}, which "
        f"would run on the CPU: {shown}{more}; use --target cpu or --target tensorrt, or "
        "replace those ops"
    )


@functools.cache
def probe_cuda() -> str | None:
    """None when onnxruntime can run on CUDA here, else a one-line reason with what to do.

    Cached for the process; `probe_cuda.cache_clear()` forgets the answer.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed; install onnxruntime-gpu for --target cuda"
    cuda_major = (getattr(ort, "cuda_version", "") or "").split(".")[0]
    needs = f"CUDA {cuda_major}.x and cuDNN 9.x" if cuda_major else "CUDA and cuDNN"
    if _PROVIDER not in ort.get_available_providers():
        return (
            f"this onnxruntime build ({ort.__version__}) has no CUDA provider; "
            "install onnxruntime-gpu instead of onnxruntime, or use --target cpu"
        )
    with _captured_stderr() as captured:
        _preload_pip_cuda_libraries(ort)
        try:
            session = open_session(
                _tiny_model_bytes(),
                providers=[_PROVIDER],
                provider_options=[cuda_provider_options()],
            )
            providers = session.get_providers()
            error = None
        except Exception as e:
            providers, error = [], ort_error_line(e)
    log = _ANSI.sub("", captured[0] if captured else "")
    if log.strip():
        logger.debug("onnxruntime while probing CUDA: %s", log.strip())
    if _PROVIDER in providers:
        return None
    cause = error or _first_error(log) or "no CUDA device or library could be loaded"
    return (
        f"onnxruntime's CUDA provider cannot start ({cause}); it needs an NVIDIA GPU, its driver "
        f"and {needs} (e.g. pip install 'onnxruntime-gpu[cuda,cudnn]'), or use --target cpu"
    )


def _preload_pip_cuda_libraries(ort: ModuleType) -> None:
    """Load CUDA/cuDNN from pip's nvidia-* wheels when they are installed.

    onnxruntime's CUDA provider has no RUNPATH into site-packages, so libraries
    installed by `pip install 'onnxruntime-gpu[cuda,cudnn]'` are only found
    after `onnxruntime.preload_dlls()`; it prints, so its output is swallowed.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload()


def _tiny_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "edgec_cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    # IR 8 / opset 17: old enough for any onnxruntime that has a CUDA provider.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def _first_error(log: str) -> str | None:
    """The useful part of onnxruntime's logged failure ('libcublasLt.so.13: cannot open ...')."""
    m = re.search(r"with error: (.+)", log)
    if m:
        return " ".join(m.group(1).split())
    for line in log.splitlines():
        if "[E:" in line:
            return ort_error_line(line.split("]", 1)[-1]).strip() or None
    return None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (onnxruntime's C++ logger writes there) into a list.

    The probe runs once; what onnxruntime printed goes to the debug log, not the
    user's terminal, and its first error becomes part of the reason.
    """
    out: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to capture
        yield out
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", errors="replace"))
