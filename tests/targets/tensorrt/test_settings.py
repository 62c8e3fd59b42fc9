"""derive_settings and the Q/DQ legality check, on small ONNX graphs (no TensorRT needed).

Settings are pure Python: what edgec derives from a model and the flags, tested directly.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from compiler.ground.errors import InvalidInput, UsageError
from targets.profiles import get_profile
from targets.tensorrt.settings import (
    DEFAULT_WORKSPACE_BYTES,
    SPARSITY_2_4,
    SPARSITY_KEY,
    BuilderSettings,
    ShapeProfile,
    check_qdq_for_tensorrt,
    derive_settings,
    graph_precision,
    has_float16,
    has_qdq,
)
from tests.targets.tensorrt.conftest import (
    dynamic_mlp,
    fp16_mlp,
    parse,
    qdq_conv,
    static_mlp,
    with_metadata,
)


def test_fp32_static_model_gets_one_fixed_profile() -> None:
    s = derive_settings(static_mlp(), precision="fp32", batch=1, max_batch=8)
    assert (s.precision, s.sparse_weights, s.dla_core) == ("fp32", False, None)
    assert s.tf32 is False  # fp32 means fp32, not TF32
    assert s.workspace_bytes == DEFAULT_WORKSPACE_BYTES
    assert s.profiles == (ShapeProfile("x", (1, 8), (1, 8), (1, 8)),)
    assert s.is_static


def test_dynamic_batch_becomes_a_batch_range() -> None:
    s = derive_settings(dynamic_mlp(), precision="fp32", batch=4, max_batch=32)
    (p,) = s.profiles
    assert (p.name, p.min, p.opt, p.max) == ("x", (1, 8), (4, 8), (32, 8))
    assert not s.is_static


def test_max_batch_defaults_to_batch() -> None:
    (p,) = derive_settings(dynamic_mlp(), precision="fp32", batch=2).profiles
    assert p.max == (2, 8)


def test_other_dynamic_dims_are_refused_without_shapes() -> None:
    model = parse(
        """
        g (float[N, C] x) => (float[N, C] y) {
          y = Relu (x)
        }
        """
    )
    with pytest.raises(UsageError, match=r"dynamic dimension at axis 1.*--input-shape"):
        derive_settings(model, precision="fp32")
    s = derive_settings(model, precision="fp32", batch=2, max_batch=4, input_shapes={"x": (9, 5)})
    # axis 0 stays the batch range; the explicit shape fixes axis 1
    assert s.profiles == (ShapeProfile("x", (1, 5), (2, 5), (4, 5)),)


def test_explicit_shape_must_agree_with_static_dims() -> None:
    with pytest.raises(UsageError, match="static dimension 8 at axis 1"):
        derive_settings(dynamic_mlp(), precision="fp32", input_shapes={"x": (1, 9)})
    with pytest.raises(UsageError, match="rank"):
        derive_settings(dynamic_mlp(), precision="fp32", input_shapes={"x": (1, 8, 1)})
    with pytest.raises(UsageError, match="'y'"):
        derive_settings(dynamic_mlp(), precision="fp32", input_shapes={"y": (1, 8)})


def test_flag_errors() -> None:
    with pytest.raises(UsageError, match="precision 'bf16'"):
        derive_settings(static_mlp(), precision="bf16")
    with pytest.raises(UsageError, match="max_batch"):
        derive_settings(dynamic_mlp(), precision="fp32", batch=8, max_batch=4)
    with pytest.raises(UsageError, match="batch must be at least 1"):
        derive_settings(dynamic_mlp(), precision="fp32", batch=0)


def test_fp16_needs_a_float16_graph() -> None:
    # Strongly typed: TensorRT builds the graph's types, so an fp32 graph would be an fp32 engine.
    with pytest.raises(InvalidInput, match="needs a graph with float16 tensors") as err:
        derive_settings(dynamic_mlp(), precision="fp16")
    assert err.value.exit_code == 4 and "--precision fp16" in str(err.value)
    for model in (fp16_mlp(), fp16_mlp(keep_io_types=True)):
        s = derive_settings(model, precision="fp16")
        assert (s.precision, s.tf32) == ("fp16", True)
    assert graph_precision(fp16_mlp(keep_io_types=True)) == "fp16"
    assert graph_precision(dynamic_mlp()) == "fp32" and graph_precision(qdq_conv()) == "int8"
    assert has_float16(fp16_mlp()) and not has_float16(dynamic_mlp())


def test_qdq_model_builds_int8_with_fp16_fallback() -> None:
    model = qdq_conv()
    assert has_qdq(model)
    assert check_qdq_for_tensorrt(model) == []
    s = derive_settings(model, precision="int8", batch=2, max_batch=16)
    assert s.precision == "int8" and s.tf32 is True
    assert s.profiles == (ShapeProfile("x", (1, 4, 8, 8), (2, 4, 8, 8), (16, 4, 8, 8)),)


def test_qdq_model_is_int8_even_when_fp32_is_asked() -> None:
    s = derive_settings(qdq_conv(), precision="fp32")
    assert s.precision == "int8"  # the Q/DQ nodes decide, not the flag


def test_legal_qdq_model_runs_in_onnxruntime() -> None:
    # The fixture is a real model: onnxruntime runs it and it computes something.
    sess = ort.InferenceSession(qdq_conv().SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    assert y.shape == (2, 4, 6, 6) and np.isfinite(y).all() and np.abs(y).max() > 0


def test_int8_without_qdq_is_refused() -> None:
    with pytest.raises(InvalidInput, match="explicitly quantized"):
        derive_settings(dynamic_mlp(), precision="int8")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: qdq_conv(x_zp=np.int8(3)), r"non-zero zero point \(3\)"),
        (lambda: qdq_conv(x_zp=np.uint8(128)), "UINT8 zero point"),
        (lambda: qdq_conv(x_zp=None), "no zero point, so ONNX quantizes to uint8"),
        (lambda: qdq_conv(w_zp=np.array([0, 0, 1, 0], np.int8)), r"non-zero zero point \(1\)"),
        (lambda: qdq_conv(w_axis=1, w_zp=np.zeros(4, np.int8)), "axis 1.*output-channel axis 0"),
        (
            lambda: qdq_conv(x_scale=np.full(4, 0.02, np.float32)),
            "quantizes an activation per channel",
        ),
        (lambda: qdq_conv(x_scale=np.float32(-0.02)), "not positive"),
    ],
    ids=[
        "nonzero-zp",
        "uint8-zp",
        "missing-zp",
        "weight-zp",
        "weight-axis",
        "act-per-channel",
        "neg-scale",
    ],
)
def test_illegal_qdq_is_refused_with_the_reason(model, message) -> None:  # type: ignore[no-untyped-def]
    proto = model()
    problems = check_qdq_for_tensorrt(proto)
    assert problems and any(re.search(message, p) for p in problems), problems
    with pytest.raises(InvalidInput) as err:
        derive_settings(proto, precision="int8")
    assert err.value.exit_code == 4
    assert "re-quantize for --target tensorrt" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("op", "weight_shape", "axis", "legal"),
    [
        ("Gemm <transB = 1>", (4, 8), 0, True),  # [out, in]
        ("Gemm <transB = 1>", (4, 8), 1, False),
        ("Gemm", (8, 4), 1, True),  # [in, out]
        ("Gemm", (8, 4), 0, False),
        ("MatMul", (8, 4), -1, True),  # the last axis
        ("MatMul", (8, 4), 0, False),
    ],
)
def test_per_channel_axis_rule_for_gemm_and_matmul(
    op: str, weight_shape: tuple[int, int], axis: int, legal: bool
) -> None:
    rng = np.random.default_rng(0)
    channels = weight_shape[axis]
    model = parse(
        f"""
        g (float[N, 8] x) => (float[N, 4] y) {{
          xq = QuantizeLinear (x, s, z)
          xd = DequantizeLinear (xq, s, z)
          wd = DequantizeLinear <axis = {axis}> (w_q, w_s, w_z)
          y = {op} (xd, wd)
        }}
        """,
        s=np.float32(0.05),
        z=np.int8(0),
        w_q=rng.integers(-127, 128, weight_shape).astype(np.int8),
        w_s=np.full(channels, 0.01, np.float32),
        w_z=np.zeros(channels, np.int8),
    )
    problems = check_qdq_for_tensorrt(model)
    if legal:
        assert problems == []
    else:
        assert len(problems) == 1 and "output-channel axis" in problems[0], problems


def test_scale_count_must_match_the_weight_axis() -> None:
    # onnx.checker does not compare a per-axis scale with the weight's dimension.
    model = qdq_conv()
    w_scale = next(t for t in model.graph.initializer if t.name == "w_scale")
    w_scale.CopyFrom(numpy_helper.from_array(np.full(3, 0.01, np.float32), "w_scale"))
    w_zp = next(t for t in model.graph.initializer if t.name == "w_zp")
    w_zp.CopyFrom(numpy_helper.from_array(np.zeros(3, np.int8), "w_zp"))
    (problem,) = check_qdq_for_tensorrt(model)
    assert "3 scales for axis 0 of a weight shaped (4, 4, 3, 3)" in problem


def test_2_4_metadata_sets_sparse_weights() -> None:
    sparse = with_metadata(dynamic_mlp(), {SPARSITY_KEY: SPARSITY_2_4})
    assert derive_settings(sparse, precision="fp32").sparse_weights is True
    assert derive_settings(dynamic_mlp(), precision="fp32").sparse_weights is False
    other = with_metadata(dynamic_mlp(), {SPARSITY_KEY: "unstructured"})
    assert derive_settings(other, precision="fp32").sparse_weights is False


def test_sparsity_key_matches_the_pruning_pass() -> None:
    semi = pytest.importorskip("passes.prune.semi_structured")
    assert (semi.SPARSITY_KEY, semi.SPARSITY_2_4) == (SPARSITY_KEY, SPARSITY_2_4)


def test_device_profile_caps_workspace_and_drops_sparsity_it_lacks() -> None:
    sparse = with_metadata(fp16_mlp(), {SPARSITY_KEY: SPARSITY_2_4})
    nano = get_profile("jetson-orin-nano")
    orin = derive_settings(sparse, precision="fp16", device_profile=nano)
    assert orin.sparse_weights is True
    assert orin.workspace_bytes == nano.max_workspace_bytes
    volta = dataclasses.replace(nano, name="board", supports_sparsity=False)
    assert derive_settings(sparse, precision="fp16", device_profile=volta).sparse_weights is False


def test_xavier_cannot_have_tensorrt_10() -> None:
    with pytest.raises(UsageError) as err:
        derive_settings(
            fp16_mlp(), precision="fp16", device_profile=get_profile("jetson-xavier-nx")
        )
    message = str(err.value)
    assert "cannot have TensorRT 10 or newer" in message and "TensorRT 8.5" in message
    assert "JetPack 5.1" in message and "--target cuda" in message and err.value.exit_code == 2


def test_dla_core_on_boards_with_dla_for_fp16_and_int8() -> None:
    nx, agx, nano = (
        get_profile(n) for n in ("jetson-orin-nx", "jetson-orin-agx", "jetson-orin-nano")
    )
    assert derive_settings(fp16_mlp(), precision="fp16", device_profile=nx).dla_core == 0
    assert derive_settings(qdq_conv(), precision="int8", device_profile=agx).dla_core == 0
    # fp32 does not run on DLA; a board without DLA; the caller opting out
    assert derive_settings(dynamic_mlp(), precision="fp32", device_profile=nx).dla_core is None
    assert derive_settings(fp16_mlp(), precision="fp16", device_profile=nano).dla_core is None
    off = derive_settings(fp16_mlp(), precision="fp16", device_profile=nx, use_dla=False)
    assert off.dla_core is None
    assert derive_settings(fp16_mlp(), precision="fp16").dla_core is None  # no board, no DLA


def test_device_profile_without_tensorrt_is_refused() -> None:
    with pytest.raises(UsageError, match="raspberry-pi-5.*--target cpu"):
        derive_settings(
            dynamic_mlp(), precision="fp32", device_profile=get_profile("raspberry-pi-5")
        )


def test_device_profile_without_fp16_or_int8_is_refused() -> None:
    nano = get_profile("jetson-orin-nano")
    no_fp16 = dataclasses.replace(nano, name="board", supports_fp16=False)
    with pytest.raises(UsageError, match="does not run fp16"):
        derive_settings(fp16_mlp(), precision="fp16", device_profile=no_fp16)
    no_int8 = dataclasses.replace(nano, name="board", supports_int8=False)
    with pytest.raises(UsageError, match="does not run int8"):
        derive_settings(qdq_conv(), precision="fp32", device_profile=no_int8)


def test_settings_validate_and_serialize() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile("x", (4, 8), (2, 8), (8, 8))
    with pytest.raises(ValueError, match="rank"):
        ShapeProfile("x", (1,), (1, 8), (1, 8))
    p = ShapeProfile("x", [1, 8], [2, 8], [4, 8])  # type: ignore[arg-type]  # lists are converted
    assert p.opt == (2, 8)
    with pytest.raises(ValueError, match="workspace"):
        BuilderSettings(precision="fp32", sparse_weights=False, workspace_bytes=0, profiles=())
    with pytest.raises(ValueError, match="one shape profile per input"):
        BuilderSettings("fp32", False, 1, profiles=(p, p))
    with pytest.raises(ValueError, match="precision"):
        BuilderSettings("int4", False, 1, profiles=())
    with pytest.raises(ValueError, match="builder_optimization_level"):
        BuilderSettings("fp32", False, 1, profiles=(), builder_optimization_level=6)
    s = derive_settings(fp16_mlp(), precision="fp16", batch=2, max_batch=4)
    d = s.to_dict()
    assert d["profiles"] == [{"name": "x", "min": [1, 8], "opt": [2, 8], "max": [4, 8]}]
    assert d["precision"] == "fp16" and d["strongly_typed"] is True
    assert d["workspace_bytes"] == DEFAULT_WORKSPACE_BYTES and d["dla_core"] is None
    assert not {"fp16", "int8", "obey_precision"} & set(d)  # no weak-typing flags
    assert s.replace(dla_core=0).dla_core == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.precision = "fp32"  # type: ignore[misc]  # frozen on purpose
