"""The float stem and the float skip path, kept or dropped by their measured cost and gain."""

from __future__ import annotations

import math

import pytest

from passes import graph_tools
from passes.quantize import CPU_SPEC, PtqOptions, quantize
from passes.quantize.float_choices import (
    NOISE_SIGMAS,
    Decision,
    Measured,
    decide,
    float_choices,
    keep,
    median_error,
)
from passes.quantize.plan import stem_nodes
from tests.passes.quantize import _models


@pytest.mark.parametrize(
    "gain_db,cost,kept",
    [
        (1.3, -0.03, True),  # MobileNetV2's float stem on a VNNI EPYC: free, 1.3 dB
        (0.27, 0.05, False),  # its float skip path: 5% of INT8's time for 0.27 dB
        (0.5, 0.009, True),  # within 2% a dB
        (0.5, 0.011, False),
        (0.0, -0.1, False),  # buys nothing: int8, however cheap the float is
        (-0.2, -0.1, False),
        (math.inf, 0.5, True),  # exact in float, noisy in int8
    ],
)
def test_a_choice_is_kept_when_it_buys_accuracy_within_its_latency_price(
    gain_db: float, cost: float, kept: bool
) -> None:
    assert keep(gain_db, cost, per_db=0.02) is kept


def test_each_choice_is_decided_on_its_own_measurement() -> None:
    measured = {
        "stem": Measured(sqnr_db=22.0, int8_sqnr_db=20.4, latency_ratio=0.98),
        "skip": Measured(sqnr_db=20.7, int8_sqnr_db=20.4, latency_ratio=1.05),
    }
    assert measured["skip"].gain_db == pytest.approx(0.3)
    assert measured["skip"].cost == pytest.approx(0.05)
    decided = decide(measured, per_db=0.02)
    assert {k: (d.kept, d.by) for k, d in decided.items()} == {
        "stem": (True, "measurement"),
        "skip": (False, "measurement"),
    }
    assert all(d.kept for d in decide(measured, per_db=1.0).values())


def test_a_cost_within_the_timing_noise_keeps_the_specs_rule() -> None:
    # +0.3 dB at a 0.6% price; measured 1% slower, but give or take 1% (one error)
    close = {"skip": Measured(20.7, 20.4, latency_ratio=1.01, latency_error=0.01)}
    assert decide(close, 0.02, by_spec={"skip"})["skip"] == Decision(True, "spec")
    assert decide(close, 0.02, by_spec=())["skip"] == Decision(False, "spec")
    # the same cost measured tighter: the measurement decides
    sure = {"skip": Measured(20.7, 20.4, latency_ratio=1.05, latency_error=0.01)}
    assert decide(sure, 0.02, by_spec={"skip"})["skip"] == Decision(False, "measurement")
    # buying nothing is not a timing question
    none = {"stem": Measured(20.4, 20.4, latency_ratio=1.0, latency_error=0.05)}
    assert decide(none, 0.02, by_spec={"stem"})["stem"] == Decision(False, "measurement")


def test_the_medians_error_comes_from_the_rounds_spread() -> None:
    assert median_error([1.0]) == 0.0
    assert median_error([1.0] * 30) == 0.0
    rounds = [1.0, 1.1] * 8  # median 1.05, every deviation 0.05
    expected = math.sqrt(math.pi / 2) * 1.4826 * 0.05 / 4
    assert median_error(rounds) == pytest.approx(expected)


def test_a_residual_stream_offers_the_stem_and_the_skip_path() -> None:
    model = _models.stream_model()
    graph_tools.ensure_types(model)
    choices = float_choices(model.graph, CPU_SPEC)
    stem = tuple(stem_nodes(model.graph))
    assert choices.nodes["stem"] == stem and stem
    # the two chained Adds are what the float skip path changes
    adds = tuple(n.name for n in model.graph if n.op_type == "Add")
    assert choices.nodes["skip"] == adds and len(adds) == 2
    # the CPU spec's rules: float stem, int8 skip path
    assert choices.by_spec == {"stem"}
    spec, excluded = choices.config(())
    assert not spec.float_stem and not spec.float_skip and not excluded
    spec, excluded = choices.config(("stem", "skip"))
    assert spec.float_stem and spec.float_skip and excluded == frozenset(stem)
    # a stem the caller keeps float anyway is not a choice
    assert "stem" not in float_choices(model.graph, CPU_SPEC, user_excluded=stem).nodes


def test_a_single_residual_add_offers_no_skip_path() -> None:
    model = _models.block_model()
    graph_tools.ensure_types(model)
    assert set(float_choices(model.graph, CPU_SPEC).nodes) == {"stem"}


def _quantize(**options: object):  # type: ignore[no-untyped-def]
    opts = PtqOptions(samples=32, threads=1, **options)  # type: ignore[arg-type]  # test kwargs
    return quantize(_models.stream_model(), _models.images(32), opts)


def test_measured_choices_are_timed_scored_and_taken() -> None:
    # a price no measurable cost reaches: what buys accuracy stays float (deterministic)
    q, summary = _quantize(float_choices="measured", float_cost_per_db=1e6)
    report = summary.float_choices
    assert report is not None and report["measured"] is True
    rows = {r["choice"]: r for r in report["choices"]}  # type: ignore[union-attr, index]
    assert set(rows) == {"stem", "skip"}
    for row in rows.values():
        assert row["latency_vs_int8"] > 0
        assert row["gain_db"] == pytest.approx(row["sqnr_db"] - row["int8_sqnr_db"], abs=2e-3)
        assert row["kept_float"] is (row["gain_db"] > 0)
        assert row["decided_by"] == "measurement" and row["latency_error"] >= 0
    # the artifact is the one the outcome says: the stem's nodes float or not, and the
    # second Add reading the float stream (the skip path) or its quantized copy
    stem_float = set(rows["stem"]["nodes"]) <= set(summary.kept_float)
    assert stem_float is rows["stem"]["kept_float"]
    assert summary.options["float_stem"] is rows["stem"]["kept_float"]
    assert _reads_float_stream(q) is rows["skip"]["kept_float"]
    assert "float_choices" in summary.seconds


def test_measured_choices_refused_by_their_price_go_back_to_int8() -> None:
    # a price of nothing per dB: a choice stays float only if it costs nothing at all;
    # a choice that buys nothing goes back to int8 whatever it costs
    _, summary = _quantize(float_choices="measured", float_cost_per_db=0.0)
    rows = summary.float_choices["choices"]  # type: ignore[index]
    for row in rows:  # type: ignore[union-attr]
        cost, error = row["latency_vs_int8"] - 1.0, row["latency_error"]
        slack = 1e-4  # the report rounds to 4 places
        if row["gain_db"] <= 0:
            assert (row["kept_float"], row["decided_by"]) == (False, "measurement")
        elif row["decided_by"] == "spec":  # within the noise of its price: the spec's rule
            assert abs(cost) <= NOISE_SIGMAS * error + slack
            assert row["kept_float"] is row["by_spec"]
        else:
            assert abs(cost) >= NOISE_SIGMAS * error - slack
            assert row["kept_float"] is (cost <= 0)


def test_the_default_takes_the_specs_rules_without_timing_anything() -> None:
    q, summary = _quantize()
    assert summary.float_choices is None and "float_choices" not in summary.seconds
    # CPU spec: the stem float, the chained Adds in int8 (each writes a quantized sum)
    model = _models.stream_model()
    graph_tools.ensure_types(model)
    assert set(stem_nodes(model.graph)) <= set(summary.kept_float)
    assert not _reads_float_stream(q)


def _reads_float_stream(q) -> bool:  # type: ignore[no-untyped-def]
    """Whether the second Add reads the first one's float sum (the float skip path)."""
    second = next(n for n in q.graph if n.op_type == "Add" and n.outputs[0].name == "s2")
    return any(v is not None and v.name == "s1" for v in second.inputs)
