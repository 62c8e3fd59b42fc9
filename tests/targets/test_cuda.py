from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.ground.errors import TargetUnavailable, UsageError
from targets.cpu import CpuTarget, OrtRunner
from targets.cuda import CudaTarget, probe_cuda
from targets.registry import get_target
from tests.targets.conftest import TinyModel

needs_no_gpu = pytest.mark.skipif(probe_cuda() is None, reason="a working CUDA GPU is present")


def test_registered() -> None:
    assert isinstance(get_target("cuda"), CudaTarget)


@needs_no_gpu
def test_unavailable_reason_is_one_line_with_what_to_do() -> None:
    reason = CudaTarget().unavailable_reason()
    assert isinstance(reason, str) and reason.strip()
    assert "\n" not in reason
    assert "--target cpu" in reason
    assert CudaTarget().unavailable_reason() == reason  # cached


@needs_no_gpu
def test_runner_raises_target_unavailable(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CudaTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with pytest.raises(TargetUnavailable) as err:
        CudaTarget().runner(artifact.path)
    assert err.value.exit_code == 5


@needs_no_gpu
def test_silent_cpu_fallback_is_refused(tmp_path: Path, gemm_relu: TinyModel) -> None:
    # Bypass the probe: onnxruntime itself would quietly run this on the CPU.
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with pytest.raises(TargetUnavailable, match="fell back"):
        with OrtRunner(artifact.path, providers=["CUDAExecutionProvider"]):
            pass


def test_artifact_is_the_cpu_onnx(tmp_path: Path, gemm_relu: TinyModel) -> None:
    cuda = CudaTarget().lower(gemm_relu.ir(), tmp_path / "cuda", stem="m")
    cpu = CpuTarget().lower(gemm_relu.ir(), tmp_path / "cpu", stem="m")
    assert cuda.format == "onnx"
    assert cuda.path.read_bytes() == cpu.path.read_bytes()


def test_ort_format_is_refused(tmp_path: Path, gemm_relu: TinyModel) -> None:
    with pytest.raises(UsageError, match="cpu target"):
        CudaTarget().lower(gemm_relu.ir(), tmp_path, stem="m", fmt="ort")


@pytest.mark.gpu
def test_cuda_runner_matches_numpy(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = CudaTarget()
    assert target.unavailable_reason() is None, target.unavailable_reason()
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m")
    x = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    with target.runner(artifact.path) as r:
        assert "CUDAExecutionProvider" in r.providers
        (y,) = r.infer({"x": x})
    # cuBLAS orders float32 sums differently from numpy; TF32 is off by default in onnxruntime.
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=1e-4, atol=1e-4)
