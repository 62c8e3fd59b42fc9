"""The int8-kernel overflow guard (passes/quantize/overflow.py): measured per layer on
this CPU, weights stored as uint8 with the same values, exact arithmetic unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes import graph_tools
from passes.quantize import PtqOptions, quantize
from passes.quantize.dynamic import saturating_cpu
from passes.quantize.overflow import (
    THRESHOLD,
    _kernel_probe,
    _sites,
    guard,
    kernel_errors,
    kernels_saturate,
    store_uint8,
)
from tests.passes.quantize import _models

CHANNELS = 16
X_SCALE = 0.01  # the input's Q step: inputs near 2.5 quantize near 250


def _conv(name: str, x: str, level: int) -> list[onnx.NodeProto]:
    """DQ(int8 weight, all `level`) → Conv 1x1 → Q: one group onnxruntime fuses."""
    return [
        helper.make_node(
            "DequantizeLinear", [f"{name}_w", f"{name}_ws", f"{name}_wz"], [f"{name}_wf"], axis=0
        ),
        helper.make_node("Conv", [x, f"{name}_wf"], [f"{name}_y"], name=name),
        helper.make_node("QuantizeLinear", [f"{name}_y", "y_s", "y_z"], [f"{name}_q"]),
        helper.make_node("DequantizeLinear", [f"{name}_q", "y_s", "y_z"], [f"{name}_out"]),
    ]


def _two_convs() -> ir.Model:
    """Two 1x1 convs on the same near-255 uint8 input: `hot` has weights of 127, whose
    adjacent products sum past int16 (2 * 250 * 127 > 32767); `cool` has weights of 60,
    which cannot overflow however the kernel pairs them (2 * 255 * 60 < 32767)."""
    inits = [
        numpy_helper.from_array(np.array(X_SCALE, np.float32), "x_s"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_z"),
        numpy_helper.from_array(np.array(4.0, np.float32), "y_s"),
        numpy_helper.from_array(np.array(0, np.uint8), "y_z"),
    ]
    for name, level in (("hot", 127), ("cool", 60)):
        inits += [
            numpy_helper.from_array(
                np.full((CHANNELS, CHANNELS, 1, 1), level, np.int8), f"{name}_w"
            ),
            numpy_helper.from_array(np.full(CHANNELS, 0.01, np.float32), f"{name}_ws"),
            numpy_helper.from_array(np.zeros(CHANNELS, np.int8), f"{name}_wz"),
        ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
        *_conv("hot", "xd", 127),
        *_conv("cool", "xd", 60),
    ]
    shape = ["n", CHANNELS, 4, 4]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("hot_out", "cool_out")
        ],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    return ir.from_proto(proto)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.uniform(2.45, 2.55, (2, CHANNELS, 4, 4)).astype(np.float32)}


def _run(model: ir.Model, feeds: dict[str, np.ndarray], *, optimize: bool) -> list[np.ndarray]:
    session = graph_tools.ort_session(graph_tools.model_bytes(model), optimize=optimize)
    return session.run(None, feeds)


def test_guard_names_exactly_the_layers_that_overflow_on_this_cpu() -> None:
    model, feeds = _two_convs(), _feeds()
    measured, _ = kernel_errors(model, [feeds])  # the per-layer measurement, on any CPU
    assert measured["cool"] <= THRESHOLD
    assert (measured["hot"] > 100 * THRESHOLD) == saturating_cpu()
    check = guard(model, [feeds])
    assert check.saturating_kernels == saturating_cpu()
    if saturating_cpu():  # AVX2 without VNNI: vpmaddubsw saturates the hot layer's pairs
        assert check.probed == 2 and check.samples == 2
        assert check.uint8_weights == ["hot"]
        assert check.errors["hot"] > 100 * THRESHOLD and check.errors["cool"] <= THRESHOLD
    else:  # VNNI / ARM: no int16 intermediate; the kernel probe says so, nothing runs
        assert check.probed == 0 and check.samples == 0 and check.uint8_weights == []
    # after storing the named layers as uint8, the deployed kernels give exact results
    store_uint8(model, check.uint8_weights)
    fast, exact = _run(model, feeds, optimize=True), _run(model, feeds, optimize=False)
    for a, b in zip(fast, exact, strict=True):
        np.testing.assert_allclose(a, b, atol=4.0)  # at most one output step (y_s = 4)
    errors, _ = kernel_errors(model, [feeds], weights=(np.int8, np.uint8))
    assert max(errors.values()) <= THRESHOLD


def test_uint8_weights_hold_the_same_values_and_drop_the_int8_ones() -> None:
    options = PtqOptions(samples=16, overflow_guard=False)
    qmodel, _ = quantize(_models.block_model(), _models.images(16), options)
    feeds = {"x": _models.images(4, seed=3)}
    before = _run(qmodel, feeds, optimize=False)
    layers = [site.node.name or "" for site in _sites(qmodel)]
    assert layers and store_uint8(qmodel, layers) == layers
    after = _run(qmodel, feeds, optimize=False)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    int8 = [
        name
        for name, value in qmodel.graph.initializers.items()
        if value.const_value is not None and value.const_value.numpy().dtype == np.int8
    ]
    assert not [n for n in int8 if not qmodel.graph.initializers[n].uses()]  # none left behind
    assert _sites(qmodel) == []  # no int8 weight remains on those layers


HOT = f"""{_models.HEADER}
hot (float[N, 16, 4, 4] x) => (float[N, 16, 4, 4] y) {{
  a = Conv (x, wa, ba)
  r = Relu (a)
  y = Conv (r, wb, bb)
}}"""


def _hot_model() -> ir.Model:
    """Float: two 1x1 convs whose int8 forms overflow on AVX2 (all-positive inputs near
    their range's top, weights near their channel maxima)."""
    rng = np.random.default_rng(0)
    f = np.float32
    return _models.from_text(
        HOT,
        {
            "wa": rng.uniform(0.9, 1.0, (16, 16, 1, 1)).astype(f),
            "ba": np.zeros(16, f),
            "wb": rng.uniform(-1.0, 1.0, (16, 16, 1, 1)).astype(f),
            "bb": np.zeros(16, f),
        },
    )


def _hot_inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(2.4, 2.55, (n, 16, 4, 4)).astype(np.float32)


def test_the_step_removes_the_overflow_with_7bit_or_uint8_weights() -> None:
    feeds = {"x": _hot_inputs(8, seed=5)}
    for remedy in ("7bit", "uint8"):
        options = PtqOptions(samples=16, float_stem=False, overflow_weights=remedy)
        qmodel, summary = quantize(_hot_model(), _hot_inputs(16, seed=4), options)
        report = summary.overflow
        assert report is not None and report["saturating_kernels"] == saturating_cpu()
        assert report["probed_layers"] == (1 if saturating_cpu() else 0)  # the first conv
        if saturating_cpu():
            assert report["overflowing"] == ["Conv_0"]
            fixed = "seven_bit_channels" if remedy == "7bit" else "uint8_weights"
            assert list(report[fixed]) == ["Conv_0"]
        else:
            assert report["overflowing"] == []
        errors, _ = kernel_errors(qmodel, [feeds], weights=(np.int8, np.uint8))
        assert errors and max(errors.values()) <= THRESHOLD, remedy
        fast, exact = _run(qmodel, feeds, optimize=True), _run(qmodel, feeds, optimize=False)
        assert _models.sqnr_db(exact[0], fast[0]) > 40, remedy  # deployed = exact arithmetic


def test_quantize_reports_the_check() -> None:
    _, summary = quantize(_models.block_model(), _models.images(16), PtqOptions(samples=16))
    report = summary.overflow
    assert report is not None and report["saturating_kernels"] == saturating_cpu()
    if saturating_cpu():
        assert report["probed_layers"] >= 1 and report["samples"] == 16
    else:  # the kernel probe found int32 accumulation: no layer probed
        assert report["probed_layers"] == 0 and report["samples"] == 0
    assert "overflow_guard" in summary.seconds
    _, off = quantize(
        _models.block_model(), _models.images(16), PtqOptions(samples=16, overflow_guard=False)
    )
    assert off.overflow is None and "overflow_guard" not in off.seconds


def test_an_unknown_remedy_is_refused() -> None:
    import pytest

    from passes.errors import PassOptionError

    with pytest.raises(PassOptionError, match="choose 7bit or uint8"):
        PtqOptions(overflow_weights="9bit")


def test_7bit_narrows_only_the_channels_that_overflow() -> None:
    """A layer whose first 8 output channels overflow (all weights near their channel's
    maximum) and last 8 cannot (one large weight paired with a zero, the rest small: no
    adjacent pair reaches int16):
    only the first 8 channels are rounded to ±63, the others keep ±127."""
    rng = np.random.default_rng(0)
    wa = rng.uniform(0.9, 1.0, (16, 16, 1, 1)).astype(np.float32)
    wa[8:] = rng.uniform(0.0, 0.3, (8, 16, 1, 1))
    wa[8:, 0], wa[8:, 1] = 1.0, 0.0  # the maximum (127), paired with 0; the rest below 40
    model = _models.from_text(
        HOT,
        {
            "wa": wa,
            "ba": np.zeros(16, np.float32),
            "wb": np.eye(16, dtype=np.float32)[..., None, None],
            "bb": np.zeros(16, np.float32),
        },
    )
    options = PtqOptions(samples=16, float_stem=False)
    qmodel, summary = quantize(model, _hot_inputs(16, seed=4), options)
    report = summary.overflow
    assert report is not None
    if not saturating_cpu():
        assert report["overflowing"] == []
        return
    assert report["seven_bit_channels"] == {"Conv_0": 8} and report["uint8_weights"] == []
    weight = next(
        graph_tools.constant(n.inputs[0])
        for n in qmodel.graph
        if n.op_type == "DequantizeLinear"
        and n.outputs[0].uses()[0].node.name == "Conv_0"
        and graph_tools.constant(n.inputs[0]) is not None
        and graph_tools.constant(n.inputs[0]).ndim == 4
    )
    top = np.abs(weight.astype(np.int32)).reshape(16, -1).max(axis=1)
    assert (top[:8] <= 63).all() and (top[8:] == 127).all()
    errors, _ = kernel_errors(qmodel, [{"x": _hot_inputs(8, seed=5)}])
    assert max(errors.values()) <= THRESHOLD


def test_gptq_keeps_each_row_within_its_own_qmax() -> None:
    from passes.quantize.rounding import gptq

    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4, 32))
    h = np.eye(32)[None] + 0.1
    qmax = np.array([[127, 63, 127, 63]])
    scale = np.abs(w).max(axis=2) / qmax
    q = gptq(w, h, scale, qmax)
    assert (np.abs(q).max(axis=2) <= qmax).all()
    assert np.abs(q[0, 1]).max() == 63 and np.abs(q[0, 0]).max() >= 120


def test_saturating_cpu_reads_the_vnni_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x86 without VNNI saturates (AVX2 or older: (v)pmaddubsw); VNNI or AMX does not;
    nor does another architecture, whatever its cpuinfo says, nor a missing file."""
    import platform

    def cpu(name: str, flags: str) -> bool:
        path = tmp_path / name
        path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return saturating_cpu(path)

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert cpu("epyc", "avx avx2 fma")
    assert cpu("old", "ssse3 sse4_1")
    assert not cpu("icelake", "avx2 avx512f avx512_vnni")
    assert not cpu("alderlake", "avx2 avx_vnni")
    assert not cpu("sapphire", "avx2 amx_int8 avx512_vnni")
    assert not saturating_cpu(tmp_path / "absent")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not cpu("graviton", "fp asimd")


def test_the_kernel_probe_measures_what_the_cpu_flags_predict(tmp_path: Path) -> None:
    """The worst-case probe runs integer kernels (three QLinearConv forms and a QGemm),
    its exact arithmetic puts every layer at the target step, and whether the deployed
    kernels saturate matches the CPU's flags (AVX2 without VNNI: a saturated pair sum
    halves the result, about 100 steps off)."""
    model, feeds = _kernel_probe()
    exact = _run(model, feeds, optimize=False)
    assert len(exact) == 4 and all((out == 200).all() for out in exact)
    ops = _models.optimized_ops(model, tmp_path)
    assert ops.count("QLinearConv") == 3 and ops.count("QGemm") == 1
    errors, _ = kernel_errors(model, [feeds])
    assert len(errors) == 4
    assert kernels_saturate() == saturating_cpu()
    if saturating_cpu():
        assert max(errors.values()) > 1000 * THRESHOLD
    else:
        assert max(errors.values()) == 0.0
