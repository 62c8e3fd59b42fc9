"""Real TensorRT engines against onnxruntime on the CPU. Needs TensorRT 10 or 11, cuda-python, a GPU.

Deselected by default (marker `tensorrt`); run with `pytest -m tensorrt`. Each test skips
with the reason when TensorRT cannot run here ("TensorRT not installed" on every machine
this project has had so far: these have not run yet). Tolerances: fp32 engines are built
without TF32 and match onnxruntime within 1e-3; fp16 engines (float16 graphs) within 1% of
the output's range; int8 engines run the same Q/DQ arithmetic as onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from compiler.ground.errors import InvalidInput, TargetUnavailable
from targets.cpu import CpuTarget
from targets.profiles import get_profile
from targets.tensorrt import EngineArtifact, TensorRTTarget, probe_tensorrt
from targets.tensorrt.runner import TrtRunner
from targets.tensorrt.settings import SPARSITY_2_4, SPARSITY_KEY
from tests.targets.conftest import TinyModel
from tests.targets.tensorrt.conftest import fp16_mlp, qdq_conv, single_node, with_metadata

pytestmark = pytest.mark.tensorrt


@pytest.fixture(autouse=True)
def _needs_tensorrt() -> None:
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT not installed (pip install '.[tensorrt]' on a machine with an NVIDIA GPU)",
    )
    reason = probe_tensorrt()
    if reason:
        pytest.skip(reason)


def _ort(proto: onnx.ModelProto, tmp_path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    artifact = CpuTarget().lower(ir.from_proto(proto), tmp_path / "ort", stem="ref")
    with CpuTarget().runner(artifact.path, threads=1) as r:
        return r.infer(feeds)


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_fp32_engine_matches_onnxruntime(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = TensorRTTarget(precision="fp32", batch=4, max_batch=16)
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m")
    assert artifact.format == "engine" and artifact.path == tmp_path / "m.engine"
    # the engine and its timing cache, no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.timing.cache"]
    assert isinstance(artifact, EngineArtifact)
    report = artifact.report
    assert report["timing_cache"] == str(tmp_path / "m.timing.cache")
    layers, by_precision = report["layers"], report["layers_by_precision"]
    assert isinstance(layers, int) and layers >= 1 and isinstance(by_precision, dict)
    assert by_precision.get("fp32", 0) >= 1 and not {"fp16", "int8"} & set(by_precision)
    with target.runner(artifact.path) as r:
        assert r.input_names == ["x"]
        for batch in (1, 4, 16):  # min, opt, max of the profile
            x = _x((batch, 8), seed=batch)
            (got,) = r.infer({"x": x})
            (want,) = _ort(gemm_relu.proto, tmp_path, {"x": x})
            assert got.shape == want.shape == (batch, 4) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(got, gemm_relu.reference(x), rtol=1e-3, atol=1e-3)
        assert r.last_inference_ms is not None and r.last_inference_ms > 0


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_fp16_engine_runs_the_float16_graph(tmp_path: Path, keep_io_types: bool) -> None:
    proto = fp16_mlp(keep_io_types=keep_io_types)
    target = TensorRTTarget(batch=8, max_batch=8)  # fp16 read from the graph
    artifact = target.lower(ir.from_proto(proto), tmp_path, stem="m16")
    assert isinstance(artifact, EngineArtifact)
    by_precision = artifact.report["layers_by_precision"]
    assert isinstance(by_precision, dict) and by_precision.get("fp16", 0) >= 1
    io = np.float32 if keep_io_types else np.float16
    x = _x((8, 8)).astype(io)
    with target.runner(artifact.path) as r:
        (got,) = r.infer({"x": x})
        assert got.dtype == io  # buffers follow the engine's tensor types
        (from_f32,) = r.infer({"x": x.astype(np.float32)})  # converted to the input's type
    w = next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "W")
    want = np.maximum(x.astype(np.float32) @ w.astype(np.float32), 0)
    tol = 1e-2 * float(np.abs(want).max())
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=tol)
    np.testing.assert_allclose(from_f32.astype(np.float32), want, rtol=0, atol=tol)


def test_timing_cache_is_reused(tmp_path: Path, gemm_relu: TinyModel) -> None:
    cache = tmp_path / "shared.timing.cache"
    target = TensorRTTarget(precision="fp32", timing_cache=cache)
    target.lower(gemm_relu.ir(), tmp_path / "a", stem="m")
    first = cache.read_bytes()
    assert first  # saved after the build
    target.lower(gemm_relu.ir(), tmp_path / "b", stem="m")  # loads it, then saves again
    assert cache.stat().st_size >= len(first)
    cache.write_bytes(b"not a timing cache")  # refused with a warning, the build goes on
    target.lower(gemm_relu.ir(), tmp_path / "c", stem="m")
    assert (tmp_path / "c" / "m.engine").is_file() and cache.read_bytes() != b"not a timing cache"


def test_dla_needs_a_device_with_dla(tmp_path: Path) -> None:
    import tensorrt as trt

    from targets.tensorrt.build import trt_logger
    from targets.tensorrt.compat import import_tensorrt

    if trt.Builder(trt_logger(import_tensorrt())).num_DLA_cores:
        pytest.skip("this machine has DLA cores")
    target = TensorRTTarget(device_profile=get_profile("jetson-orin-nx"))
    assert target.settings_for(fp16_mlp()).dla_core == 0
    with pytest.raises(TargetUnavailable, match="DLA core 0 requested"):
        target.lower(ir.from_proto(fp16_mlp()), tmp_path, stem="d")
    assert list(tmp_path.iterdir()) == []


def test_int8_engine_agrees_with_onnxruntime_on_the_qdq_model(tmp_path: Path) -> None:
    proto = qdq_conv()
    target = TensorRTTarget(batch=8, max_batch=8)  # int8 read from the Q/DQ
    assert target.settings_for(proto).precision == "int8"
    artifact = target.lower(ir.from_proto(proto), tmp_path, stem="q")
    assert isinstance(artifact, EngineArtifact)
    by_precision = artifact.report["layers_by_precision"]
    assert isinstance(by_precision, dict) and by_precision.get("int8", 0) >= 1
    x = _x((8, 4, 8, 8))
    with target.runner(artifact.path) as r:
        (got,) = r.infer({"x": x})
    (want,) = _ort(proto, tmp_path, {"x": x})
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * scale)
    flat_got, flat_want = got.reshape(8, -1), want.reshape(8, -1)
    cosine = (flat_got * flat_want).sum(1) / (
        np.linalg.norm(flat_got, axis=1) * np.linalg.norm(flat_want, axis=1)
    )
    assert cosine.min() > 0.999
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.95  # per-pixel top channel


def test_sparse_flag_builds_and_keeps_the_function(tmp_path: Path, gemm_relu: TinyModel) -> None:
    proto = with_metadata(gemm_relu.proto, {SPARSITY_KEY: SPARSITY_2_4})
    target = TensorRTTarget(precision="fp32", max_batch=4)
    assert target.settings_for(proto).sparse_weights
    artifact = target.lower(ir.from_proto(proto), tmp_path, stem="s")
    x = _x((4, 8))
    with target.runner(artifact.path) as r:
        (got,) = r.infer({"x": x})
    np.testing.assert_allclose(got, gemm_relu.reference(x), rtol=1e-3, atol=1e-3)


def test_runner_on_an_onnx_file_builds_in_memory(tmp_path: Path, gemm_relu: TinyModel) -> None:
    onnx_path = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m").path
    x = _x((3, 8))
    with TensorRTTarget(precision="fp32").runner(onnx_path) as r:
        (got,) = r.infer({"x": x})
    np.testing.assert_allclose(got, gemm_relu.reference(x), rtol=1e-3, atol=1e-3)
    assert not list(tmp_path.glob("*.engine"))


def test_infer_refuses_bad_feeds(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = TensorRTTarget(precision="fp32", batch=2, max_batch=4)
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m")
    with target.runner(artifact.path) as r:
        with pytest.raises(InvalidInput, match="outside what m.engine was built for"):
            r.infer({"x": _x((5, 8))})
        with pytest.raises(InvalidInput, match="float64"):
            r.infer({"x": _x((2, 8)).astype(np.float64)})
        with pytest.raises(InvalidInput, match="missing"):
            r.infer({"y": _x((2, 8))})
        (ok,) = r.infer({"x": _x((2, 8))})  # still usable afterwards
    assert ok.shape == (2, 4)


def test_parser_rejection_is_invalid_input(tmp_path: Path) -> None:
    proto = single_node(
        "Unique", [("x", onnx.TensorProto.FLOAT, [6])], [("y", onnx.TensorProto.FLOAT, [None])]
    )
    with pytest.raises(InvalidInput, match="TensorRT's ONNX parser rejected") as err:
        TensorRTTarget(precision="fp32").lower(ir.from_proto(proto), tmp_path, stem="u")
    assert err.value.exit_code == 4 and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_garbage_engine_is_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine" * 10)
    with pytest.raises(InvalidInput, match="TensorRT cannot load bad.engine"):
        with TrtRunner(bad):
            pass
