"""GPTQ rounding and empirical bias correction lower the layer/output error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from passes import graph_tools
from passes.quantize import CPU_SPEC, InsertQdqPass, PtqOptions, quantize
from passes.quantize.bias_correction import correct_bias
from passes.quantize.calibrate import collect_stats, run_with_outputs
from passes.quantize.plan import plan_quantization
from passes.quantize.rounding import HessianCollector, _depthwise_moments, gptq, round_weights
from tests.passes.quantize import _models


def test_gptq_beats_round_to_nearest_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 32)) @ rng.standard_normal((32, 32))
    h = (x.T @ x)[None]
    w = rng.standard_normal((1, 16, 32))
    s = np.abs(w).max(-1) / 127
    q = gptq(w, h, s, 127)
    rtn = np.clip(np.round(w / s[..., None]), -127, 127)

    def err(qq: np.ndarray) -> float:
        d = qq * s[..., None] - w
        return float(np.einsum("grk,gkl,grl->", d, h, d))

    assert np.abs(q).max() <= 127 and err(q) < 0.7 * err(rtn)
    # blocked and unblocked updates are the same algorithm
    np.testing.assert_array_equal(q, gptq(w, h, s, 127, block=7))


def test_depthwise_moments_match_im2col() -> None:
    x = torch.randn(2, 5, 9, 11)
    for strides, pads in (((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 1, 0, 1))):
        h, n = _depthwise_moments(x, (3, 3), strides, (1, 1), pads, 10**9)
        top, bottom, left, right = pads
        cols = F.unfold(F.pad(x, (left, right, top, bottom)), (3, 3), stride=strides)
        cols = cols.reshape(2, 5, 9, -1).permute(1, 2, 0, 3).reshape(5, 9, -1)
        np.testing.assert_allclose(
            h, (cols @ cols.transpose(1, 2)).double().numpy(), rtol=1e-5, atol=1e-4
        )
        assert n == cols.shape[2]


def _setup():  # type: ignore[no-untyped-def]
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(64)
    feeds = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    plan = plan_quantization(model.graph, CPU_SPEC.replace(float_stem=False))
    stats = collect_stats(model, plan.calibrated, feeds)
    ranges = stats.ranges("percentile", percentile=99.9)
    return model, x, feeds, plan, ranges


def test_gptq_rounding_lowers_the_output_error() -> None:
    model, x, feeds, plan, ranges = _setup()
    hc = HessianCollector(plan)
    run_with_outputs(model, hc.names, feeds, hc.visit)
    rounded = round_weights(hc, CPU_SPEC)
    assert len(rounded) == 4  # three Convs and the Gemm
    ref = _models.run(model, {"x": x})
    q_rtn, q_gptq = graph_tools.clone(model), graph_tools.clone(model)
    spec = CPU_SPEC.replace(float_stem=False)
    InsertQdqPass(spec, ranges)(q_rtn)
    InsertQdqPass(spec, ranges, weights=rounded)(q_gptq)
    assert (
        _models.sqnr_db(ref, _models.run(q_gptq, {"x": x}))
        > _models.sqnr_db(ref, _models.run(q_rtn, {"x": x})) - 0.5
    )


def test_bias_correction_removes_the_mean_shift() -> None:
    model, x, feeds, plan, ranges = _setup()

    def build(m):  # type: ignore[no-untyped-def]
        q = graph_tools.clone(m)
        InsertQdqPass(CPU_SPEC.replace(float_stem=False), ranges)(q)
        return q

    ref = _models.run(model, {"x": x})
    before = _models.run(build(model), {"x": x})
    corrected = graph_tools.clone(model)
    removed = correct_bias(corrected, build, plan.nodes, lambda: feeds)
    assert set(removed) == {"Conv_0", "Conv_2", "Conv_4", "Gemm_8"}
    after = _models.run(build(corrected), {"x": x})
    # per-logit mean error over the calibration batches shrinks
    assert np.abs((after - ref).mean(0)).mean() < 0.7 * np.abs((before - ref).mean(0)).mean()


def test_a_hessian_over_the_memory_budget_keeps_nearest_rounding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """VGG-19's 25088-input FC layer needs a 5 GB float64 Hessian: a layer over the budget
    is not collected, rounds to nearest, and the summary says which and why (#13)."""
    from passes.quantize import rounding

    model = _models.block_model()
    x = _models.images(32)
    _, full = quantize(model, x, PtqOptions(samples=32))
    # the block's Hessians: Conv 3*9=27 inputs, depthwise 9 x 8 groups, 1x1 Conv 8, Gemm 8
    monkeypatch.setattr(rounding, "MAX_HESSIAN_BYTES", 27 * 27 * 8 - 1)
    q, summary = quantize(model, x, PtqOptions(samples=32))
    assert summary.rounded_layers == full.rounded_layers - 1 == 3
    assert list(summary.rounding_skipped) == ["Conv_0"]
    assert "rounded to nearest" in summary.rounding_skipped["Conv_0"]
    assert "0.00 GiB" in summary.rounding_skipped["Conv_0"]
    ref, out = _models.run(model, {"x": x}), _models.run(q, {"x": x})
    assert _models.sqnr_db(ref, out) > 20.0


def test_huge_layer_inputs_give_finite_hessians() -> None:
    """Random data through an unnormalized VGG reaches 1e20: x x^T overflowed float32 and
    GPTQ wrote NaN weights (cast to int8 garbage); now the sums are scaled in float64."""
    from passes.quantize.rounding import _Layer, _patch_moments

    x = np.random.default_rng(0).standard_normal((4, 16, 5, 5)).astype(np.float32)
    layer = _Layer(None, "x", None, "conv", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)  # type: ignore[arg-type]
    small = _patch_moments(layer, x, 1 << 20)
    huge = _patch_moments(layer, x * np.float32(1e20), 1 << 20)
    assert small is not None and huge is not None
    assert np.all(np.isfinite(huge[0]))
    np.testing.assert_allclose(huge[0] / 1e40, small[0], rtol=1e-4, atol=1e-3)
    assert _patch_moments(layer, np.full_like(x, np.inf), 1 << 20) is None
