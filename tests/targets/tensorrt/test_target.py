"""The TensorRT target where TensorRT cannot run (this machine): registry, refusals, messages.

Nothing here stands in for TensorRT. What edgec asks of TensorRT's API is
checked against NVIDIA's documented names in test_api_names.py; building and
running engines is test_engine.py (`-m tensorrt`, skipped without TensorRT).
The tests below check edgec's own logic: which message it gives when the
import fails (the import is made to fail by a meta-path finder, the way a
missing package or library fails it), which TensorRT versions it refuses, what
it derives from the target's options, and how it picks between APIs that the
installed bindings do or do not offer (small modules with only the attribute
in question, never a TensorRT that pretends to build).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from compiler.ground.errors import InvalidInput, TargetUnavailable, UsageError
from targets.profiles import get_profile
from targets.registry import get_target, target_names
from targets.tensorrt import EngineArtifact, TensorRTTarget, engine_report, probe_tensorrt
from targets.tensorrt.build import EngineFromOnnx, parser_error_line
from targets.tensorrt.compat import (
    import_problem,
    import_tensorrt,
    missing_api,
    network_flags,
    version_problem,
)
from targets.tensorrt.engine_info import EngineSummary
from targets.tensorrt.runner import TrtRunner, cuda_device_problem, stream_handle
from targets.tensorrt.settings import ShapeProfile, derive_settings
from tests.targets.conftest import TinyModel
from tests.targets.tensorrt.conftest import dynamic_mlp, fp16_mlp, qdq_conv

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
    assert reason.startswith("TensorRT is not installed: pip install tensorrt")
    assert "pip install '.[tensorrt]'" in reason and "NVIDIA GPU" in reason
    assert "--target cuda" in reason


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
    s = TensorRTTarget().settings_for(qdq_conv())  # precision read from the model
    assert s.precision == "int8"
    assert s.profiles[0].max[0] == 16  # the pipeline's evaluation batch fits
    assert TensorRTTarget().settings_for(fp16_mlp()).precision == "fp16"
    assert TensorRTTarget().settings_for(dynamic_mlp()).precision == "fp32"
    s = TensorRTTarget(precision="fp16", batch=4, max_batch=8).settings_for(fp16_mlp())
    assert s.precision == "fp16" and s.dla_core is None
    assert s.profiles == (ShapeProfile("x", (1, 8), (4, 8), (8, 8)),)
    with pytest.raises(InvalidInput, match="explicitly quantized"):
        TensorRTTarget(precision="int8").settings_for(dynamic_mlp())
    with pytest.raises(InvalidInput, match="float16"):
        TensorRTTarget(precision="fp16").settings_for(dynamic_mlp())
    board = get_profile("jetson-orin-nx")
    assert TensorRTTarget(device_profile=board).settings_for(fp16_mlp()).dla_core == 0
    no_dla = TensorRTTarget(device_profile=board, use_dla=False)
    assert no_dla.settings_for(fp16_mlp()).dla_core is None


def test_engine_report_is_json_ready() -> None:
    settings = derive_settings(fp16_mlp(), precision="fp16", batch=2, max_batch=4)
    loader = EngineFromOnnx(fp16_mlp(), settings, timing_cache=Path("out/m.timing.cache"))
    assert (loader.summary, loader.tensorrt_version) == (None, None)  # nothing built yet
    empty = engine_report(loader)
    assert empty["layers"] is None and empty["layers_by_precision"] is None
    loader.summary = EngineSummary(5, {"fp16": 4, "fp32": 1}, True, {"x": "fp16"})
    loader.tensorrt_version = "10.3.0"
    report = engine_report(loader)
    assert report["layers"] == 5 and report["layers_by_precision"] == {"fp16": 4, "fp32": 1}
    assert report["tensorrt_version"] == "10.3.0"
    assert report["timing_cache"] == str(Path("out/m.timing.cache"))
    assert report["settings"] == settings.to_dict()
    json.dumps(report)
    artifact = EngineArtifact(path=Path("m.engine"), format="engine", report=report)
    assert artifact.format == "engine" and artifact.report["layers"] == 5


def test_parser_error_line() -> None:
    # ParserError's accessors as documented (parsers/Onnx/pyOnnx.html): desc, node_name,
    # node_operator; edgec's formatting of them is what is tested.
    err = SimpleNamespace(
        desc=lambda: "Assertion failed:\n  unsupported op",
        node_name=lambda: "u0",
        node_operator=lambda: "Unique",
    )
    assert parser_error_line(err) == "node 'u0' (Unique): Assertion failed: unsupported op"
    assert parser_error_line(SimpleNamespace(desc=lambda: "bad graph")) == "bad graph"


# ---------------------------------------------------------------------------------------------
# What edgec says when `import tensorrt` fails. The import is made to fail the way it fails
# on a machine: no package (ModuleNotFoundError), or the package without its shared libraries
# (the dynamic loader's ImportError, or ctypes' OSError, naming the library).


class _FailingImport(importlib.abc.MetaPathFinder):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == "tensorrt":
            raise self.error


@pytest.fixture
def fail_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    probe_tensorrt.cache_clear()

    def install(error: BaseException) -> None:
        monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
        monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])

    yield install
    probe_tensorrt.cache_clear()


MISSING_SO = "libnvonnxparser.so.11: cannot open shared object file: No such file or directory"


@pytest.mark.parametrize("error", [ImportError(MISSING_SO), OSError(MISSING_SO)])
def test_missing_libraries_are_told_apart(fail_import: Any, error: BaseException) -> None:
    fail_import(error)
    with pytest.raises(TargetUnavailable) as err:
        import_tensorrt()
    message = str(err.value)
    assert err.value.exit_code == 5 and "\n" not in message
    assert message.startswith(
        "TensorRT's Python package is installed but its libraries are missing "
        "(libnvonnxparser.so.11: cannot open shared object file"
    )
    assert "install the TensorRT libraries matching it" in message
    assert probe_tensorrt() == message


def test_no_tensorrt_says_install_tensorrt(
    fail_import: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import` raises ModuleNotFoundError
    with pytest.raises(TargetUnavailable) as err:
        import_tensorrt()
    assert err.value.exit_code == 5
    assert str(err.value).startswith("TensorRT is not installed: pip install tensorrt")
    assert probe_tensorrt() == str(err.value)


def test_other_import_failures_say_reinstall() -> None:
    broken = ModuleNotFoundError("No module named 'tensorrt_bindings'", name="tensorrt_bindings")
    assert "cannot be imported (No module named 'tensorrt_bindings'); reinstall" in (
        import_problem(broken)
    )


# ---------------------------------------------------------------------------------------------
# Versions and what the bindings offer: modules carrying only the attribute in question.


def _module(name: str, **attrs: Any) -> ModuleType:
    m = ModuleType(name)
    m.__dict__.update(attrs)
    return m


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", "", "unknown"])
def test_tensorrt_before_10_is_refused(version: str) -> None:
    problem = version_problem(_module("tensorrt", __version__=version))
    assert problem is not None and "needs TensorRT 10 or 11" in problem
    assert "pip install 'tensorrt>=10,<12'" in problem


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "10.16.1", "11.0.0", "11.4.0.106"])
def test_tensorrt_10_and_11_are_accepted(version: str) -> None:
    assert version_problem(_module("tensorrt", __version__=version)) is None


def test_missing_api_lists_what_the_bindings_lack() -> None:
    flags = SimpleNamespace(SPARSE_WEIGHTS=1, TF32=2)  # no GPU_FALLBACK
    missing = missing_api(_module("tensorrt", __version__="11.0.0", BuilderFlag=flags))
    assert "Builder" in missing and "BuilderFlag.GPU_FALLBACK" in missing
    assert "BuilderFlag.TF32" not in missing and "LayerInformationFormat.JSON" in missing


def test_strongly_typed_flag_where_the_bindings_offer_it() -> None:
    creation = SimpleNamespace(STRONGLY_TYPED=2)  # an enum member's int value
    offered = _module("tensorrt", NetworkDefinitionCreationFlag=creation)
    assert network_flags(offered) == 1 << 2
    assert network_flags(_module("tensorrt")) == 0  # no flag: strongly typed is the only kind


def test_stream_handle_prefers_get_cuda_native_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stream:  # a cudaStream_t wrapping address 1234
        def __int__(self) -> int:
            return 1234

    utils = _module("cuda.bindings.utils", get_cuda_native_handle=lambda s: 4321)
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    assert stream_handle(Stream()) == 4321  # cuda-bindings 12.9.1+/13: int() is deprecated
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # older cuda-python 12.x
    assert stream_handle(Stream()) == 1234


def test_runner_feeds_follow_the_engine_dtypes() -> None:
    runner = TrtRunner(b"engine")
    runner._dtypes = {"x": np.dtype(np.float16), "i": np.dtype(np.int32)}
    x = runner._host_input("x", np.ones((2, 8), np.float32))
    assert x.dtype == np.float16 and x.flags["C_CONTIGUOUS"]
    with pytest.raises(InvalidInput, match="float64, the engine takes float16"):
        runner._host_input("x", np.ones((2, 8), np.float64))
    with pytest.raises(InvalidInput, match="int64, the engine takes int32"):
        runner._host_input("i", np.ones(3, np.int64))


# ---------------------------------------------------------------------------------------------
# cuda-python's answers (cuda.bindings.runtime returns (error, value) tuples), mapped to messages.


def test_cuda_python_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` raise ImportError
    problem = cuda_device_problem()
    assert problem is not None and problem.startswith(
        "cuda-python is not installed; pip install cuda-python"
    )
    assert "13.x for tensorrt-cu13" in problem


def test_cuda_device_missing(monkeypatch: pytest.MonkeyPatch) -> None:
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
        problem = cuda_device_problem()
        assert problem is not None and problem.startswith(result), problem
        assert "NVIDIA GPU" in problem
