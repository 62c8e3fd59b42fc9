"""The CUDA target. Everything but the `gpu`-marked tests runs here for real: the
probe against this machine's onnxruntime-gpu (whose CUDA provider cannot start
without a GPU), the options edgec builds, the int8 refusal, and the runner's
placement check, float16 feeds and IO binding on the CPU provider (onnxruntime
binds to "cpu" as it binds to "cuda")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from compiler.ground.errors import InvalidInput, TargetUnavailable, UsageError
from targets.cpu import CpuTarget, OrtRunner
from targets.cuda import (
    INT8_REFUSAL,
    SESSION_CONFIG,
    CudaRunner,
    CudaTarget,
    Placement,
    cpu_fallbacks,
    cuda_provider_options,
    fallback_message,
    node_placements,
    probe_cuda,
)
from targets.registry import get_target
from tests.targets.conftest import TinyModel

needs_no_gpu = pytest.mark.skipif(probe_cuda() is None, reason="a working CUDA GPU is present")
needs_gpu = pytest.mark.skipif(probe_cuda() is not None, reason=str(probe_cuda()))
CPU = ("CPUExecutionProvider",)
CUDA = "CUDAExecutionProvider"


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
def test_probe_names_why_cuda_cannot_start() -> None:
    import onnxruntime as ort

    reason = probe_cuda()
    assert reason is not None
    if CUDA not in ort.get_available_providers():  # a CPU-only onnxruntime
        assert reason.startswith("this onnxruntime build (") and "onnxruntime-gpu" in reason
        return
    # onnxruntime-gpu without a GPU or its libraries: the cause is onnxruntime's own words
    assert reason.startswith("onnxruntime's CUDA provider cannot start (")
    cause = reason.split("(", 1)[1].split(");", 1)[0]
    assert cause.strip() and "\x1b" not in cause
    assert "cuDNN 9.x" in reason and "pip install 'onnxruntime-gpu[cuda,cudnn]'" in reason


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
    with pytest.raises(TargetUnavailable, match="fell back"):
        with CudaRunner(artifact.path):  # edgec's options change nothing about that
            pass


def test_artifact_is_the_cpu_onnx(tmp_path: Path, gemm_relu: TinyModel) -> None:
    cuda = CudaTarget().lower(gemm_relu.ir(), tmp_path / "cuda", stem="m")
    cpu = CpuTarget().lower(gemm_relu.ir(), tmp_path / "cpu", stem="m")
    assert cuda.format == "onnx"
    assert cuda.path.read_bytes() == cpu.path.read_bytes()


def test_ort_format_is_refused(tmp_path: Path, gemm_relu: TinyModel) -> None:
    with pytest.raises(UsageError, match="cpu target"):
        CudaTarget().lower(gemm_relu.ir(), tmp_path, stem="m", fmt="ort")


# --- the options edgec gives onnxruntime --------------------------------------------------


def test_provider_options_turn_tf32_off_and_cuda_graphs_on_only_when_asked() -> None:
    assert cuda_provider_options() == {
        "device_id": "0",
        "use_tf32": "0",
        "enable_cuda_graph": "0",
    }
    assert cuda_provider_options(cuda_graph=True, device_id=1) == {
        "device_id": "1",
        "use_tf32": "0",
        "enable_cuda_graph": "1",
    }


def test_runner_gives_the_options_to_the_cuda_provider_only(gemm_relu: TinyModel) -> None:
    model = gemm_relu.proto.SerializeToString()
    on_cuda = CudaRunner(model)
    assert on_cuda.providers == (CUDA,)
    assert on_cuda.provider_options == [cuda_provider_options()]
    assert on_cuda.session_config == SESSION_CONFIG
    # the timing session alone captures CUDA graphs; every session keeps TF32 off
    graphs = CudaRunner(model, cuda_graph=True)
    assert graphs.provider_options == [cuda_provider_options()]
    on_cpu = CudaRunner(model, providers=CPU, device="cpu")
    assert on_cpu.provider_options is None
    with pytest.raises(ValueError, match="CUDA graphs need the CUDA provider"):
        CudaRunner(model, providers=CPU, device="cpu", cuda_graph=True)
    assert CudaTarget().cuda_graph is False


def test_session_records_node_placement_instead_of_disabling_fallback(
    gemm_relu: TinyModel,
) -> None:
    with CudaRunner(gemm_relu.proto.SerializeToString(), providers=CPU, device="cpu") as r:
        opts = r._session.get_session_options()  # the options object onnxruntime holds
        assert opts.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"
        with pytest.raises(RuntimeError, match="does not have configuration"):
            opts.get_session_config_entry("session.disable_cpu_ep_fallback")
        assert [p.op_type for p in r.placements] == ["Gemm", "Relu", "MatMul"]
        assert {p.provider for p in r.placements} == set(CPU)


def test_cpu_target_sessions_are_unchanged(gemm_relu: TinyModel) -> None:
    runner = CpuTarget().runner(Path("unused.onnx"))
    assert runner.provider_options is None and runner.session_config == {}


# --- int8 and fp16 -----------------------------------------------------------------------


def test_int8_is_refused_with_a_pointer_to_tensorrt() -> None:
    target = CudaTarget()
    assert "int8" not in target.precisions
    assert target.precisions == ("fp32", "fp16", "auto")
    assert target.precision_refusal("int8") == INT8_REFUSAL
    assert "\n" not in INT8_REFUSAL and "--target tensorrt" in INT8_REFUSAL
    # the pipeline turns the refusal into a usage error (exit 2) before any work
    from compiler.config import CompileConfig
    from compiler.pipeline import _check_fits_target

    with pytest.raises(UsageError) as err:
        _check_fits_target(CompileConfig("m.onnx", target="cuda", precision="int8"), target)
    assert err.value.exit_code == 2 and str(err.value) == INT8_REFUSAL
    for precision in ("fp32", "fp16", "auto"):
        assert target.precision_refusal(precision) is None
        _check_fits_target(CompileConfig("m.onnx", target="cuda", precision=precision), target)
    assert target.precision_refusal("bf16") == (
        "target cuda does not run --precision bf16; choose one of fp32, fp16, auto"
    )


def _to_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with float16 weights, input and output (what an FP16 pass writes)."""
    fp16 = onnx.ModelProto()
    fp16.CopyFrom(proto)
    graph = fp16.graph
    for i, init in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
        )
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.checker.check_model(fp16, full_check=True)
    return fp16


def test_float16_artifact_takes_float32_feeds(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CudaTarget().lower(ir.from_proto(_to_float16(gemm_relu.proto)), tmp_path, stem="h")
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    with CudaRunner(artifact.path, providers=CPU, device="cpu") as r:
        assert r.cast_feeds({"x": x})["x"].dtype == np.float16
        (y,) = r.infer({"x": x})
        call = r.bound_call({"x": x})
        call()
        (bound,) = call.outputs()
    assert y.dtype == np.float16 and bound.dtype == np.float16
    np.testing.assert_array_equal(bound, y)
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=2e-2, atol=5e-2)


def test_cast_feeds_casts_floats_only(gemm_relu: TinyModel) -> None:
    with CudaRunner(gemm_relu.proto.SerializeToString(), providers=CPU, device="cpu") as r:
        x16 = np.ones((2, 8), np.float16)
        assert r.cast_feeds({"x": x16})["x"].dtype == np.float32
        ints = np.ones((2, 8), np.int64)
        assert r.cast_feeds({"x": ints})["x"].dtype == np.int64  # not silently converted
        with pytest.raises(InvalidInput, match="inference on the model failed"):
            r.infer({"x": ints})


# --- IO binding --------------------------------------------------------------------------


def test_bound_call_matches_infer_on_the_cpu_provider(gemm_relu: TinyModel) -> None:
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    with CudaRunner(gemm_relu.proto.SerializeToString(), providers=CPU, device="cpu") as r:
        (y,) = r.infer({"x": x})
        call = r.bound_call({"x": x})
        assert r.timing_mode == "io_binding"
        call()
        call()
        (bound,) = call.outputs()
    np.testing.assert_array_equal(bound, y)
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=1e-4, atol=1e-4)


def test_bound_call_needs_an_active_runner(gemm_relu: TinyModel) -> None:
    runner = CudaRunner(gemm_relu.proto.SerializeToString(), providers=CPU, device="cpu")
    with pytest.raises(RuntimeError, match="not active"):
        runner.bound_call({"x": np.zeros((1, 8), np.float32)})


def test_preallocated_outputs_are_written_in_place(gemm_relu: TinyModel) -> None:
    # what a CUDA graph needs (outputs at fixed addresses), run on the CPU provider
    x = np.random.default_rng(6).standard_normal((3, 8)).astype(np.float32)
    with CudaRunner(gemm_relu.proto.SerializeToString(), providers=CPU, device="cpu") as r:
        (y,) = r.infer({"x": x})
        call = r.bound_call({"x": x})
        call.preallocate_outputs([y])
        call()
        (first,) = call.outputs()
        call()
        (second,) = call.outputs()
        with pytest.raises(ValueError, match="CUDA graphs need the CUDA provider"):
            r.bound_call({"x": x}, cuda_graph=True)
    np.testing.assert_array_equal(first, y)
    np.testing.assert_array_equal(second, y)


# --- placement: deliberate shape math on the CPU versus a missing CUDA kernel ---------------

DYNAMIC_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
dyn (float[N, 8] x, int64[K] k) => (float[N, 2, 4] y, int64[K] k2) {
  s = Shape <start = 0, end = 1> (x)
  tail = Constant <value = int64[2] {2, 4}> ()
  shape = Concat <axis = 0> (s, tail)
  r = Reshape (x, shape)
  e = Erf (r)
  y = Relu (e)
  k2 = Add (k, k)
}
"""


@pytest.fixture(scope="module")
def dynamic() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(DYNAMIC_TEXT)
    for node in proto.graph.node:
        node.name = f"{node.op_type.lower()}_node"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_node_placements_come_from_onnxruntime(dynamic: onnx.ModelProto) -> None:
    with CudaRunner(dynamic.SerializeToString(), providers=CPU, device="cpu") as r:
        placements = node_placements(r._session)
    names = {p.name for p in placements}
    # at level "all" onnxruntime folds Shape → Concat into Reshape's shape; the rest remain
    assert {"reshape_node", "erf_node", "relu_node", "add_node"} <= names
    assert all(p.provider == "CPUExecutionProvider" for p in placements)
    assert cpu_fallbacks(placements, dynamic, "CPUExecutionProvider") == []


def _placed(on_cpu: set[str], model: onnx.ModelProto) -> list[Placement]:
    """Placements as onnxruntime reports them when the CUDA provider keeps all but `on_cpu`."""
    return [
        Placement("CPUExecutionProvider" if n.name in on_cpu else CUDA, n.op_type, n.name)
        for n in model.graph.node
        if n.op_type != "Constant"  # onnxruntime turns Constant nodes into initializers
    ]


def test_shape_math_on_the_cpu_is_deliberate(dynamic: onnx.ModelProto) -> None:
    # Concat reads Shape's host output and a constant; Add reads only int64 graph inputs
    placements = _placed({"concat_node", "add_node"}, dynamic)
    assert cpu_fallbacks(placements, dynamic, CUDA) == []


def test_a_float_node_on_the_cpu_is_a_fallback(dynamic: onnx.ModelProto) -> None:
    placements = _placed({"concat_node", "erf_node"}, dynamic)
    placements += [
        Placement("CPUExecutionProvider", "Gather", ""),  # made by onnxruntime: shape math
        Placement("CPUExecutionProvider", "Hardmax", ""),  # made by onnxruntime: not
    ]
    fallbacks = cpu_fallbacks(placements, dynamic, CUDA)
    assert fallbacks == [
        Placement("CPUExecutionProvider", "Erf", "erf_node"),
        Placement("CPUExecutionProvider", "Hardmax", ""),
    ]
    message = fallback_message(fallbacks, "m.onnx", CUDA)
    assert message == (
        "onnxruntime's CUDAExecutionProvider has no kernel for 2 node(s) of m.onnx, which "
        "would run on the CPU: Erf 'erf_node', Hardmax; use --target cpu or --target tensorrt, "
        "or replace those ops"
    )
    assert InvalidInput(message).exit_code == 4


def test_fallback_message_lists_five_nodes_at_most() -> None:
    many = [Placement("CPUExecutionProvider", "Erf", f"e{i}") for i in range(7)]
    message = fallback_message(many, "m.onnx", CUDA)
    assert "'e4' and 2 more;" in message and "e5" not in message


# --- on a GPU ----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_cuda_runner_matches_numpy(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = CudaTarget()
    assert target.unavailable_reason() is None, target.unavailable_reason()
    artifact = target.lower(gemm_relu.ir(), tmp_path, stem="m")
    x = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    with target.runner(artifact.path) as r:
        assert "CUDAExecutionProvider" in r.providers
        assert {p.provider for p in r.placements} == {CUDA}
        (y,) = r.infer({"x": x})
        call = r.bound_call({"x": x})
        call()
        (bound,) = call.outputs()
    # TF32 is off: cuBLAS float32 agrees with float64 numpy to float32 rounding
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(bound, y)


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_timing_call_matches(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CudaTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    x = np.random.default_rng(4).standard_normal((6, 8)).astype(np.float32)
    with CudaTarget(cuda_graph=True).runner(artifact.path) as r:
        (y,) = r.infer({"x": x})
        call = r.bound_call({"x": x})
        assert r.timing_mode == "cuda_graph"
        for _ in range(3):  # capture, then replays
            call()
        (replayed,) = call.outputs()
    np.testing.assert_allclose(replayed, y, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@needs_gpu
def test_float16_artifact_on_cuda(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = CudaTarget()
    artifact = target.lower(ir.from_proto(_to_float16(gemm_relu.proto)), tmp_path, stem="h")
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    with target.runner(artifact.path) as r:
        (y,) = r.infer({"x": x})
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, gemm_relu.reference(x), rtol=2e-2, atol=5e-2)


@pytest.mark.gpu
@needs_gpu
def test_op_without_cuda_kernel_is_refused(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> hm (float[N, 4] x) => (float[N, 4] y) '
        "{ y = Hardmax <axis = 1> (x) }"
    )
    proto.graph.node[0].name = "hardmax_node"
    artifact = CudaTarget().lower(ir.from_proto(proto), tmp_path, stem="hm")
    with pytest.raises(InvalidInput, match="Hardmax 'hardmax_node'") as err:
        with CudaTarget().runner(artifact.path):
            pass
    assert err.value.exit_code == 4
