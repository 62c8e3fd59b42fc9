"""Bias correction's per-layer error (`local_sqnr_db`): each layer's own output SQNR."""

from __future__ import annotations

import numpy as np

from passes import graph_tools
from passes.quantize import CPU_SPEC, InsertQdqPass
from passes.quantize.bias_correction import correct_bias
from passes.quantize.calibrate import collect_stats, run_with_outputs
from passes.quantize.plan import plan_quantization
from tests.passes.quantize import _models


def test_local_sqnr_matches_the_first_layers_error_measured_directly() -> None:
    """The first Conv reads the graph input, so its float twin's output is the float
    model's own: the reported SQNR must equal the one computed from both models'
    outputs of that layer (0.01 dB), and every corrected layer gets a finite value."""
    model = _models.block_model()
    graph_tools.ensure_types(model)
    x = _models.images(64)
    feeds = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    spec = CPU_SPEC.replace(float_stem=False)
    plan = plan_quantization(model.graph, spec)
    ranges = collect_stats(model, plan.calibrated, feeds).ranges("percentile", percentile=99.9)

    def build(m):  # type: ignore[no-untyped-def]  # test helper
        q = graph_tools.clone(m)
        InsertQdqPass(spec, ranges)(q)
        return q

    first = next(n for n in model.graph if n.name == "Conv_0").outputs[0].name or ""

    def outputs(m) -> np.ndarray:  # type: ignore[no-untyped-def]  # test helper
        got: list[np.ndarray] = []
        run_with_outputs(m, [first], feeds, lambda _, y: got.append(y))
        return np.concatenate(got).astype(np.float64)

    ref, quant = outputs(model), outputs(build(model))
    direct = 10 * np.log10((ref**2).sum() / ((quant - ref) ** 2).sum())

    local: dict[str, float] = {}
    removed = correct_bias(
        graph_tools.clone(model), build, plan.nodes, lambda: feeds, local_sqnr_db=local
    )
    assert set(local) == set(removed) == {"Conv_0", "Conv_2", "Conv_4", "Gemm_8"}
    assert abs(local["Conv_0"] - direct) < 0.01
    assert all(10.0 < v < 80.0 for v in local.values()), local
