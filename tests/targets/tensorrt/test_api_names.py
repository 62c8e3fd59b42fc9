"""edgec's TensorRT calls, checked against TensorRT's documented Python API (no TensorRT needed).

TensorRT is not installable on the machines these tests run on, so nothing
here imports it and nothing fakes it. Instead the table below lists the
TensorRT 10.x/11.x Python API names edgec may use, per interface, transcribed
from NVIDIA's Python API reference (URLs beside each entry; pages of
https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/ and
of the 10.x archives), and REMOVED lists what TensorRT 11 removed ("Removed
Python APIs and Replacements",
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html)
or what 10.x deprecated on the way there. A walk over the AST of edgec's
TensorRT-facing modules finds every attribute used on a TensorRT object —
`trt.X`, `trt.BuilderFlag.X`, `config.X`, `engine.X`, ... (the objects are
known by the variable names the modules give them: HOLDERS) — and every
constant name probed with `getattr`/`hasattr`, and fails on any name that is
not in its interface's table, or that is in REMOVED. A call to a removed or
misspelt API cannot pass, which a recording stand-in could not promise.

Every name in the table was also looked up in the names and docstrings compiled
into NVIDIA's tensorrt-cu12-bindings wheels 10.3.0 (JetPack 6.1's TensorRT) and
11.4.0.106 (read as text, not imported: the libraries are not installable here);
the one name only one of them has is the inspector's context (noted below).
REMOVED names are refused on every interface: `DataType.INT8` is a type, not a
flag, but edgec has no use for it either.

What this cannot check: argument types and behaviour. Those are the
`tensorrt`-marked tests in test_engine.py, which skip here ("TensorRT not
installed").
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from targets.tensorrt import compat

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "targets" / "tensorrt"
# The modules that touch TensorRT objects; the others must stay pure Python.
TRT_MODULES = ("__init__.py", "build.py", "compat.py", "runner.py")
PURE_MODULES = ("engine_info.py", "settings.py", "shapes.py", "trtexec.py")

_PY = "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/"

# interface → the names edgec may use on it (documented for TensorRT 10.x and 11.x
# unless the comment says which).
API: dict[str, frozenset[str]] = {
    # the `tensorrt` module: classes and enums of infer/Core/*.html, infer/Graph/*.html;
    # nptype: infer/FoundationalTypes/DataType.html
    "tensorrt": frozenset(
        {
            "Builder",
            "OnnxParser",
            "Runtime",
            "ILogger",
            "Logger",
            "nptype",
            "DataType",
            "BuilderFlag",
            "MemoryPoolType",
            "DeviceType",
            "ProfilingVerbosity",
            "LayerInformationFormat",
            "TensorIOMode",
            "NetworkDefinitionCreationFlag",
            "__version__",
        }
    ),
    # infer/Core/Logger.html
    "ILogger": frozenset({"Severity", "__init__", "log"}),
    "ILogger.Severity": frozenset({"INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"}),
    # infer/Core/Builder.html: STRONGLY_TYPED (10.x: opt-in; 11.x: deprecated, ignored)
    "NetworkDefinitionCreationFlag": frozenset({"STRONGLY_TYPED"}),
    # infer/Core/BuilderConfig.html (BuilderFlag members present in 10.x and 11.x)
    "BuilderFlag": frozenset(
        {
            "DEBUG",
            "GPU_FALLBACK",
            "REFIT",
            "DISABLE_TIMING_CACHE",
            "TF32",
            "SPARSE_WEIGHTS",
            "SAFETY_SCOPE",
            "VERSION_COMPATIBLE",
            "EXCLUDE_LEAN_RUNTIME",
            "ERROR_ON_TIMING_CACHE_MISS",
            "DISABLE_COMPILATION_CACHE",
            "STRIP_PLAN",
            "REFIT_IDENTICAL",
            "WEIGHT_STREAMING",
        }
    ),
    "MemoryPoolType": frozenset(
        {
            "WORKSPACE",
            "DLA_MANAGED_SRAM",
            "DLA_LOCAL_DRAM",
            "DLA_GLOBAL_DRAM",
            "TACTIC_DRAM",
            "TACTIC_SHARED_MEMORY",
        }
    ),
    "DeviceType": frozenset({"GPU", "DLA"}),
    "ProfilingVerbosity": frozenset({"LAYER_NAMES_ONLY", "NONE", "DETAILED"}),
    # infer/Core/EngineInspector.html
    "LayerInformationFormat": frozenset({"ONELINE", "JSON"}),
    # infer/Core/Engine.html
    "TensorIOMode": frozenset({"NONE", "INPUT", "OUTPUT"}),
    # infer/Core/Builder.html
    "Builder": frozenset(
        {
            "create_network",
            "create_builder_config",
            "create_optimization_profile",
            "build_serialized_network",
            "num_DLA_cores",
            "max_DLA_batch_size",
        }
    ),
    # infer/Graph/Network.html
    "INetworkDefinition": frozenset(
        {"num_inputs", "num_outputs", "num_layers", "get_input", "get_output"}
    ),
    # infer/Graph/LayerBase.html (ITensor)
    "ITensor": frozenset({"name", "shape", "dtype", "is_shape_tensor", "is_network_input"}),
    # parsers/Onnx/pyOnnx.html
    "OnnxParser": frozenset({"parse", "num_errors", "get_error", "clear_errors", "set_flag"}),
    # infer/Core/BuilderConfig.html
    "IBuilderConfig": frozenset(
        {
            "set_memory_pool_limit",
            "get_memory_pool_limit",
            "set_flag",
            "clear_flag",
            "get_flag",
            "builder_optimization_level",
            "default_device_type",
            "DLA_core",
            "can_run_on_DLA",
            "add_optimization_profile",
            "profiling_verbosity",
            "create_timing_cache",
            "set_timing_cache",
            "get_timing_cache",
            "max_aux_streams",
        }
    ),
    # infer/Core/TimingCache.html
    "ITimingCache": frozenset({"serialize", "combine", "reset"}),
    # infer/Core/OptimizationProfile.html
    "IOptimizationProfile": frozenset({"set_shape", "get_shape"}),
    # infer/Core/Runtime.html
    "Runtime": frozenset({"deserialize_cuda_engine"}),
    # infer/Core/Engine.html
    "ICudaEngine": frozenset(
        {
            "num_io_tensors",
            "num_layers",
            "num_optimization_profiles",
            "name",
            "get_tensor_name",
            "get_tensor_mode",
            "get_tensor_dtype",
            "get_tensor_shape",
            "get_tensor_profile_shape",
            "is_shape_inference_io",
            "create_execution_context",
            "create_engine_inspector",
            "serialize",
        }
    ),
    # infer/Core/ExecutionContext.html
    "IExecutionContext": frozenset(
        {
            "engine",
            "set_input_shape",
            "get_tensor_shape",
            "set_tensor_address",
            "execute_async_v3",
        }
    ),
    # infer/Core/EngineInspector.html: the inspected context is `context` in the
    # 10.x reference (e.g. archives/tensorrt-1030) and `execution_context` in 11.x
    "EngineInspector": frozenset(
        {
            "get_engine_information",
            "get_layer_information",
            "context",
            "execution_context",
            "error_recorder",
        }
    ),
}

# Removed in TensorRT 11 (the migration guide's Python list) or deprecated in 10.x.
REMOVED = frozenset(
    {
        # weak typing and implicit quantization
        "FP16",
        "INT8",
        "FP8",
        "BF16",
        "INT4",
        "FP4",
        "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS",
        "STRICT_TYPES",
        "DIRECT_IO",
        "int8_calibrator",
        "set_calibration_profile",
        "get_calibration_profile",
        "set_quantization_flag",
        "get_quantization_flag",
        "clear_quantization_flag",
        "quantization_flags",
        "platform_has_fast_fp16",
        "platform_has_fast_int8",
        "IInt8EntropyCalibrator2",
        "IInt8MinMaxCalibrator",
        "algorithm_selector",
        # the implicit-batch / binding-index API (gone since 10.0)
        "EXPLICIT_BATCH",
        "max_workspace_size",
        "build_engine",
        "execute_async_v2",
        "num_bindings",
        "get_binding_index",
        "get_binding_shape",
        "set_binding_shape",
        "binding_is_input",
        "device_memory_size",
    }
)

# Variable (or `self.` attribute) names edgec's modules give TensorRT objects.
HOLDERS = {
    "trt": "tensorrt",
    "_trt": "tensorrt",
    "severity": "ILogger.Severity",
    "creation": "NetworkDefinitionCreationFlag",
    "builder": "Builder",
    "network": "INetworkDefinition",
    "tensor": "ITensor",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "cache": "ITimingCache",
    "profile": "IOptimizationProfile",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "context": "IExecutionContext",
    "_context": "IExecutionContext",
    "inspector": "EngineInspector",
}


def _interface(expr: ast.expr) -> str | None:
    """The TensorRT interface `expr` holds, by HOLDERS and the table's nesting."""
    if isinstance(expr, ast.Name):
        return HOLDERS.get(expr.id)
    if isinstance(expr, ast.Attribute):
        if isinstance(expr.value, ast.Name) and expr.value.id == "self":
            return HOLDERS.get(expr.attr)
        parent = _interface(expr.value)
        if parent is None:
            return None
        nested = f"{parent}.{expr.attr}"
        if nested in API:
            return nested
        if parent == "tensorrt" and expr.attr in API:
            return expr.attr
    return None


def uses(source: str) -> Iterator[tuple[int, str, str]]:
    """(line, interface, name) for every TensorRT name `source` uses."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = _interface(node.value)
            if owner is not None:
                yield node.lineno, owner, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            owner = _interface(node.args[0])
            if owner is not None:
                yield node.lineno, owner, node.args[1].value


def problems(source: str, where: str = "<source>") -> list[str]:
    out = []
    for line, owner, name in uses(source):
        if name in REMOVED:
            out.append(f"{where}:{line} {owner}.{name} is removed in TensorRT 11")
        elif name not in API[owner]:
            out.append(f"{where}:{line} {owner}.{name} is not in the documented API table")
    return out


def _edgec_sources() -> dict[str, str]:
    return {name: (PACKAGE / name).read_text() for name in TRT_MODULES}


def test_the_table_lists_no_removed_name() -> None:
    assert not {n for names in API.values() for n in names} & REMOVED


def test_edgec_uses_only_documented_tensorrt_names() -> None:
    found = [p for name, src in _edgec_sources().items() for p in problems(src, name)]
    assert not found, "\n".join(found)


def test_the_walk_sees_edgec_s_tensorrt_calls() -> None:
    # Guard against a walk that passes by seeing nothing: the calls the target
    # cannot work without are all found, on the interface they belong to.
    seen = {(owner, name) for src in _edgec_sources().values() for _, owner, name in uses(src)}
    for needed in [
        ("Builder", "create_network"),
        ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
        ("OnnxParser", "parse"),
        ("IBuilderConfig", "set_memory_pool_limit"),
        ("IBuilderConfig", "profiling_verbosity"),
        ("IBuilderConfig", "create_timing_cache"),
        ("IBuilderConfig", "set_timing_cache"),
        ("IBuilderConfig", "get_timing_cache"),
        ("IBuilderConfig", "DLA_core"),
        ("BuilderFlag", "GPU_FALLBACK"),
        ("ITimingCache", "serialize"),
        ("IOptimizationProfile", "set_shape"),
        ("ICudaEngine", "create_engine_inspector"),
        ("EngineInspector", "get_engine_information"),
        ("EngineInspector", "execution_context"),
        ("EngineInspector", "context"),
        ("LayerInformationFormat", "JSON"),
        ("ProfilingVerbosity", "DETAILED"),
        ("IExecutionContext", "execute_async_v3"),
        ("IExecutionContext", "set_tensor_address"),
        ("ICudaEngine", "get_tensor_dtype"),
        ("tensorrt", "nptype"),
    ]:
        assert needed in seen, needed
    assert len(seen) >= 40


def test_compat_required_names_are_documented() -> None:
    for owner, name in compat._REQUIRED:  # probed with hasattr on the imported module
        assert name in API[owner or "tensorrt"], (owner, name)
        if owner:
            assert owner in API["tensorrt"]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("config.set_flag(trt.BuilderFlag.FP16)", "BuilderFlag.FP16 is removed"),
        ("config.set_flag(trt.BuilderFlag.INT8)", "BuilderFlag.INT8 is removed"),
        (
            "config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)",
            "OBEY_PRECISION_CONSTRAINTS is removed",
        ),
        ("config.int8_calibrator = calibrator", "IBuilderConfig.int8_calibrator is removed"),
        ("config.set_calibration_profile(p)", "set_calibration_profile is removed"),
        ("self._engine.get_binding_shape(0)", "ICudaEngine.get_binding_shape is removed"),
        ("flag = getattr(trt.BuilderFlag, 'FP16', None)", "BuilderFlag.FP16 is removed"),
        ("config.set_fp16_mode(True)", "IBuilderConfig.set_fp16_mode is not in"),
        ("context.execute_async(0)", "IExecutionContext.execute_async is not in"),
        ("config.set_flag(trt.BuilderFlag.kTF32)", "BuilderFlag.kTF32 is not in"),
        ("inspector.engine = engine", "EngineInspector.engine is not in"),
    ],
)
def test_the_check_fails_on_a_wrong_api(snippet: str, message: str) -> None:
    found = problems(snippet)
    assert any(message in p for p in found), found


def test_the_check_passes_documented_calls() -> None:
    good = """
builder = trt.Builder(log)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
config = builder.create_builder_config()
config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
config.clear_flag(trt.BuilderFlag.TF32)
config.set_timing_cache(config.create_timing_cache(b""), False)
inspector = engine.create_engine_inspector()
print(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
"""
    assert problems(good) == []


def test_pure_modules_do_not_touch_tensorrt() -> None:
    for name in PURE_MODULES:
        tree = ast.parse((PACKAGE / name).read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        imports = {
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "trt" not in names and "tensorrt" not in imports | modules, name
    listed = set(TRT_MODULES) | set(PURE_MODULES)
    assert {p.name for p in PACKAGE.glob("*.py")} == listed  # a new module must be classified
