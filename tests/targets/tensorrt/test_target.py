"""The TensorRT target where TensorRT cannot run (this machine): registry, refusals, mapping."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from compiler.ground.errors import InvalidInput, TargetUnavailable, UsageError
from targets.registry import get_target, target_names
from targets.tensorrt import TensorRTTarget, probe_tensorrt
from targets.tensorrt.build import EngineFromOnnx, configure_builder, parser_error_line
from targets.tensorrt.runner import TrtRunner
from targets.tensorrt.settings import BuilderSettings, ShapeProfile, derive_settings
from tests.targets.conftest import TinyModel
from tests.targets.tensorrt.conftest import dynamic_mlp, qdq_conv

no_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
unavailable = pytest.mark.skipif(probe_tensorrt() is None, reason="TensorRT can run here")


def test_registered() -> None:
    assert "tensorrt" in target_names()
    target = get_target("tensorrt")
    assert isinstance(target, TensorRTTarget) and target.name == "tensorrt"


@unavailable
def test_unavailable_reason_is_one_line_with_what_to_do() -> None:
    reason = TensorRTTarget().unavailable_reason()
    assert isinstance(reason, str) and reason.strip() and "\n" not in reason
    assert TensorRTTarget().unavailable_reason() == reason  # cached


@no_tensorrt
def test_reason_without_tensorrt_says_how_to_install() -> None:
    reason = probe_tensorrt()
    assert reason is not None
    assert reason.startswith("TensorRT is not installed")
    assert "pip install '.[tensorrt]'" in reason and "NVIDIA GPU" in reason
    assert "NVIDIA's package index" in reason and "--target cuda" in reason


@unavailable
def test_lower_and_runner_raise_target_unavailable(tmp_path: Path, gemm_relu: TinyModel) -> None:
    with pytest.raises(TargetUnavailable) as err:
        TensorRTTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    assert err.value.exit_code == 5
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(TargetUnavailable):
        TensorRTTarget().runner(tmp_path / "m.engine")


def test_only_engine_format(tmp_path: Path, gemm_relu: TinyModel) -> None:
    with pytest.raises(UsageError, match=r"only \.engine"):
        TensorRTTarget().lower(gemm_relu.ir(), tmp_path, stem="m", fmt="ort")
    with pytest.raises(UsageError, match="plain file name"):
        TensorRTTarget().lower(gemm_relu.ir(), tmp_path, stem="../m")


@no_tensorrt
def test_loader_and_runner_import_tensorrt_lazily(tmp_path: Path) -> None:
    settings = derive_settings(dynamic_mlp(), precision="fp32")
    loader = EngineFromOnnx(dynamic_mlp(), settings)  # constructing needs no TensorRT
    with pytest.raises(TargetUnavailable, match="TensorRT is not installed"):
        loader()
    with pytest.raises(TargetUnavailable):
        loader.save(tmp_path / "m.engine")
    assert list(tmp_path.iterdir()) == []
    runner = TrtRunner(tmp_path / "m.engine")
    assert not runner.is_active and runner.name == "m.engine"
    with pytest.raises(TargetUnavailable):
        runner.__enter__()
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer({})


def test_settings_from_the_target_options() -> None:
    proto = qdq_conv()
    s = TensorRTTarget().settings_for(proto)  # precision read from the model
    assert (s.int8, s.fp16) == (True, True)
    assert s.profiles[0].max[0] == 16  # the pipeline's evaluation batch fits
    s = TensorRTTarget(precision="fp16", batch=4, max_batch=8).settings_for(dynamic_mlp())
    assert (s.fp16, s.int8) == (True, False)
    assert s.profiles == (ShapeProfile("x", (1, 8), (4, 8), (8, 8)),)
    with pytest.raises(InvalidInput):
        TensorRTTarget(precision="int8").settings_for(dynamic_mlp())


# ---------------------------------------------------------------------------------------------
# configure_builder's translation of BuilderSettings into TensorRT API calls. The stand-ins
# below only record calls; they build nothing and say nothing about whether TensorRT accepts
# the result (the tensorrt-marked tests in test_engine.py do, on a machine with TensorRT).


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


def _fake_trt() -> SimpleNamespace:
    flags = SimpleNamespace(
        FP16="FP16",
        INT8="INT8",
        SPARSE_WEIGHTS="SPARSE_WEIGHTS",
        TF32="TF32",
        OBEY_PRECISION_CONSTRAINTS="OBEY",
        GPU_FALLBACK="GPU_FALLBACK",
    )
    return SimpleNamespace(
        BuilderFlag=flags,
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        DeviceType=SimpleNamespace(DLA="DLA"),
        __version__="10.x",
    )


def _network(*inputs: tuple[str, tuple[int, ...], bool]) -> SimpleNamespace:
    tensors = [SimpleNamespace(name=n, shape=s, is_shape_tensor=st) for n, s, st in inputs]
    return SimpleNamespace(num_inputs=len(tensors), get_input=tensors.__getitem__)


def _configure(settings: BuilderSettings, network: SimpleNamespace) -> tuple[_Recorder, _Recorder]:
    profile = _Recorder()
    builder = SimpleNamespace(create_optimization_profile=lambda: profile, num_DLA_cores=2)
    config = _Recorder()
    configure_builder(_fake_trt(), builder, network, config, settings)
    return config, profile


def test_configure_builder_maps_flags_and_workspace() -> None:
    s = derive_settings(qdq_conv(), precision="int8", batch=2, max_batch=8)
    config, profile = _configure(s, _network(("x", (-1, 4, 8, 8), False)))
    assert ("set_memory_pool_limit", "WORKSPACE", s.workspace_bytes) in config.calls
    assert {c[1] for c in config.calls if c[0] == "set_flag"} == {"FP16", "INT8"}
    assert ("clear_flag", "TF32") not in config.calls
    assert profile.calls == [("set_shape", "x", (1, 4, 8, 8), (2, 4, 8, 8), (8, 4, 8, 8))]
    assert config.calls[-1] == ("add_optimization_profile", profile)


def test_configure_builder_fp32_static() -> None:
    s = derive_settings(dynamic_mlp(), precision="fp32").replace(sparse_weights=True)
    config, profile = _configure(s, _network(("x", (1, 8), False)))
    assert {c[1] for c in config.calls if c[0] == "set_flag"} == {"SPARSE_WEIGHTS"}
    assert ("clear_flag", "TF32") in config.calls
    assert profile.calls == [] and not any(c[0] == "add_optimization_profile" for c in config.calls)


def test_configure_builder_refusals() -> None:
    s = derive_settings(dynamic_mlp(), precision="fp32")
    with pytest.raises(InvalidInput, match="no shape range"):
        _configure(s, _network(("other", (-1, 8), False)))
    with pytest.raises(InvalidInput, match="rank"):
        _configure(s, _network(("x", (-1, 8, 1), False)))
    with pytest.raises(InvalidInput, match="shape tensor"):
        _configure(s, _network(("x", (2,), True)))
    with pytest.raises(TargetUnavailable, match="DLA core 3"):
        _configure(s.replace(dla_core=3), _network(("x", (1, 8), False)))


def test_parser_error_line() -> None:
    err = SimpleNamespace(
        desc=lambda: "Assertion failed:\n  unsupported op",
        node_name=lambda: "u0",
        node_operator=lambda: "Unique",
    )
    assert parser_error_line(err) == "node 'u0' (Unique): Assertion failed: unsupported op"
    assert parser_error_line(SimpleNamespace(desc=lambda: "bad graph")) == "bad graph"


# ---------------------------------------------------------------------------------------------
# probe_tensorrt's decisions, with the imports it makes replaced in sys.modules.


@pytest.fixture
def fresh_probe():  # type: ignore[no-untyped-def]
    probe_tensorrt.cache_clear()
    yield probe_tensorrt
    probe_tensorrt.cache_clear()


def _module(name: str, **attrs: Any) -> ModuleType:
    m = ModuleType(name)
    m.__dict__.update(attrs)
    return m


def test_probe_refuses_other_tensorrt_majors(monkeypatch: pytest.MonkeyPatch, fresh_probe) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "tensorrt", _module("tensorrt", __version__="11.1.0"))
    reason = fresh_probe()
    assert reason is not None and "TensorRT 11.1.0 is installed" in reason
    assert "'tensorrt>=10,<11'" in reason


def test_probe_needs_cuda_python(monkeypatch: pytest.MonkeyPatch, fresh_probe) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "tensorrt", _module("tensorrt", __version__="10.9.0"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` raise ImportError
    reason = fresh_probe()
    assert reason is not None and reason.startswith(
        "cuda-python is not installed; pip install cuda-python"
    )


def test_probe_reports_a_missing_device(monkeypatch: pytest.MonkeyPatch, fresh_probe) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "tensorrt", _module("tensorrt", __version__="10.9.0"))
    errors = SimpleNamespace(cudaSuccess=0)
    for count, result in ((0, "no CUDA device found"), (None, "no usable CUDA device")):
        runtime = _module(
            "cuda.bindings.runtime",
            cudaError_t=errors,
            cudaGetDeviceCount=lambda c=count: (0, c) if c is not None else (35, None),
            cudaGetErrorString=lambda err: (0, b"CUDA driver version is insufficient"),
        )
        bindings = _module("cuda.bindings", runtime=runtime)
        monkeypatch.setitem(sys.modules, "cuda", _module("cuda", bindings=bindings))
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
        fresh_probe.cache_clear()
        reason = fresh_probe()
        assert reason is not None and reason.startswith(result), reason
        assert "NVIDIA GPU" in reason
