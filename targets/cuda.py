"""The CUDA target: onnxruntime's CUDAExecutionProvider.

The artifact is the same `.onnx` file as the CPU target's; only the runner
differs. onnxruntime lists 'CUDAExecutionProvider' whenever the GPU wheel is
installed, and silently falls back to the CPU when the CUDA libraries or the
device cannot be loaded. So availability is decided by a probe: a one-node
session on CUDA whose `get_providers()` must still contain CUDA. The probe runs
once per process and its answer is cached.

Latency: `OrtRunner.infer` returns outputs as host numpy arrays, so each run
ends with a device-to-host copy and is synchronous; a timed call covers the
host-to-device input copy, the kernels and the copy back.
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
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import onnx_ir as ir

from compiler.ground.errors import TargetUnavailable, UsageError
from compiler.ground.sessions import open_session
from targets.base import DEFAULT_PRECISIONS, Artifact
from targets.cpu import OrtRunner, lower_onnx, ort_error_line

if TYPE_CHECKING:
    from passes.quantize.spec import QuantSpec

logger = logging.getLogger(__name__)

_PROVIDER = "CUDAExecutionProvider"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CudaTarget:
    """onnxruntime on an NVIDIA GPU; artifact: `.onnx`."""

    name = "cuda"
    #: channel pruning keeps channel counts in multiples of this
    channel_multiple = 8
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    formats: tuple[str, ...] = ("onnx",)
    providers: tuple[str, ...] = (_PROVIDER,)

    @property
    def quant_spec(self) -> QuantSpec:
        """Symmetric int8, zero point 0: what NVIDIA GPU int8 kernels expect."""
        from passes.quantize.spec import TENSORRT_SPEC

        return TENSORRT_SPEC

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

    def runner(self, artifact: Path, *, threads: int | None = None) -> OrtRunner:
        reason = self.unavailable_reason()
        if reason:
            raise TargetUnavailable(reason)
        return OrtRunner(artifact, providers=self.providers, threads=threads)


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
            session = open_session(_tiny_model_bytes(), providers=[_PROVIDER])
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
