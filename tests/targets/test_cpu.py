from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.ground.errors import InvalidInput, UsageError
from targets.cpu import CpuTarget, OrtRunner, ort_error_line
from targets.registry import get_target
from tests.targets.conftest import TinyModel

# float32 kernels against a float64 numpy reference; outputs are O(10).
RTOL, ATOL = 1e-5, 1e-5


def _x(n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_registered_and_available() -> None:
    target = get_target("cpu")
    assert isinstance(target, CpuTarget)
    assert target.name == "cpu"
    assert target.unavailable_reason() is None


def test_onnx_artifact_matches_numpy(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = CpuTarget()
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m")
    assert artifact.format == "onnx" and artifact.path == tmp_path / "m.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left
    x = _x()
    runner = target.runner(artifact.path, threads=1)
    with runner as r:
        assert r is runner and r.is_active
        assert r.input_names == ["x"] and r.output_names == ["y"]
        (y,) = r.infer({"x": x})
        assert r.last_inference_ms is not None and r.last_inference_ms >= 0
    assert not runner.is_active
    assert y.shape == (5, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=RTOL, atol=ATOL)


def test_onnx_artifact_is_byte_deterministic(tmp_path: Path, gemm_relu: TinyModel) -> None:
    a = CpuTarget().lower(gemm_relu.ir(), tmp_path / "a", stem="m")
    b = CpuTarget().lower(gemm_relu.ir(), tmp_path / "b", stem="m")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_ort_format_artifact_runs_and_matches(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = CpuTarget()
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m", fmt="ort")
    assert artifact.format == "ort" and artifact.path == tmp_path / "m.ort"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.ort"]
    assert artifact.path.read_bytes()[4:8] == b"ORTM"  # the ORT flatbuffer file identifier
    x = _x(7)
    with target.runner(artifact.path, threads=1) as r:
        (y,) = r.infer({"x": x})
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=RTOL, atol=ATOL)


def test_default_threads_runs(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with CpuTarget().runner(artifact.path) as r:
        assert r.threads is None
        (y,) = r.infer({"x": _x(2)})
    assert y.shape == (2, 4)


def test_bad_threads_is_a_usage_error(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with pytest.raises(UsageError, match="threads"):
        with CpuTarget().runner(artifact.path, threads=0):
            pass


@pytest.mark.parametrize("stem", ["", "a/b", "..", "x\\y"])
def test_stem_must_be_a_plain_name(tmp_path: Path, gemm_relu: TinyModel, stem: str) -> None:
    with pytest.raises(UsageError):
        CpuTarget().lower(gemm_relu.ir(), tmp_path, stem=stem)


def test_unknown_format_is_a_usage_error(tmp_path: Path, gemm_relu: TinyModel) -> None:
    with pytest.raises(UsageError, match="engine"):
        CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m", fmt="engine")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_file_is_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model\xff\xfe" * 10)
    with pytest.raises(InvalidInput) as err:
        with CpuTarget().runner(bad):
            pass
    message = str(err.value)
    assert err.value.exit_code == 4
    assert "bad.onnx" in message and "\n" not in message


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        with CpuTarget().runner(tmp_path / "nope.onnx"):
            pass


def test_unsupported_ir_version_says_why_in_one_line(tmp_path: Path, gemm_relu: TinyModel) -> None:
    proto = type(gemm_relu.proto)()
    proto.CopyFrom(gemm_relu.proto)
    proto.ir_version = 99
    path = tmp_path / "future.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidInput) as err:
        with CpuTarget().runner(path):
            pass
    message = str(err.value)
    assert "IR version" in message
    assert "onnxruntime_src" not in message and "::" not in message and "\n" not in message


def test_failed_ort_conversion_leaves_no_ort_file(tmp_path: Path, gemm_relu: TinyModel) -> None:
    import onnx_ir as ir

    model = gemm_relu.ir()
    model.ir_version = 99  # onnxruntime refuses it at conversion time
    with pytest.raises(InvalidInput, match="ORT format"):
        CpuTarget().lower(model, tmp_path, stem="m", fmt="ort")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert isinstance(model, ir.Model)


def test_feeds_must_match_inputs(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with CpuTarget().runner(artifact.path, threads=1) as r:
        with pytest.raises(InvalidInput, match="missing"):
            r.infer({"input": _x()})
        with pytest.raises(InvalidInput, match="inference on m.onnx failed"):
            r.infer({"x": np.zeros((2, 3), np.float32)})  # wrong inner dimension


def test_infer_needs_an_active_runner(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with pytest.raises(RuntimeError, match="not active"):
        OrtRunner(artifact.path).infer({"x": _x()})


def test_ort_error_line_strips_location_and_signature() -> None:
    raw = (
        "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:256 "
        "onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, "
        "const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) "
        "Unsupported model IR version: 14, max supported IR version: 13\n"
    )
    assert ort_error_line(RuntimeError(raw)) == (
        "Unsupported model IR version: 14, max supported IR version: 13"
    )
    assert ort_error_line(RuntimeError("plain message")) == "plain message"
