"""PtqOptions: the one home of PTQ's defaults, validated when built; the steps' order."""

from __future__ import annotations

from dataclasses import fields

import pytest

from passes.errors import PassOptionError
from passes.quantize import PtqOptions, quantize
from passes.quantize.steps import Calibration, Rounding, check_order, default_steps
from tests.passes.quantize import _models

# The measured defaults (passes/quantize docstring, bench/quantize_compare.py); changing one
# changes every artifact, so it must be a deliberate edit here too.
DEFAULTS = {
    "method": "percentile",
    "percentile": 99.99,
    "samples": 256,
    "equalize": True,
    "equalize_pairs": True,
    "equalize_headroom": 2.0,
    "equalize_alpha_dense": 0.5,
    "stream_alpha": 0.5,
    "range_search": True,
    "residual_shrink": True,  # MobileNetV2: 21.7 -> 23.6 dB held-out (last stage at 0.35x)
    "rounding": "gptq",
    "bias_correction": True,
    "exclude": (),
    "float_stem": None,
    "float_choices": "spec",
    "float_cost_per_db": 0.02,
    "min_sqnr_db": None,
    "min_agreement": None,
    "max_float_layers": None,
    "min_speedup_kept": 0.8,  # the fallback keeps 80% of the time all-INT8 saves
    "max_latency_ratio": None,
    "max_latency_ms": None,
    "latency_rounds": 12,
    "sensitivity": False,
    "batch_size": 8,
    "equalize_samples": 64,
    "rounding_samples": 32,
    "range_samples": 32,
    "bias_correction_samples": 64,
    "sensitivity_samples": 32,
    "smooth_alpha": 0.7,  # all-MiniLM-L6 dynamic INT8: best of 0.5, 0.7, 0.8
    "smooth_samples": 64,
    "overflow_guard": True,  # MobileNetV2 on AVX2: 17.5 -> 21.85 dB held-out
    "overflow_weights": "7bit",  # same speed; uint8: 21.9 dB but 1.11x FP32 latency
    "overflow_samples": 16,
    "threads": 0,
}


def test_defaults_are_the_measured_ones() -> None:
    options = PtqOptions()
    assert {f.name: getattr(options, f.name) for f in fields(options)} == DEFAULTS
    assert options.changed() == {}
    assert PtqOptions(method="mse", threads=2).changed() == {"method": "mse", "threads": 2}


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"method": "kl"}, "unknown calibration method 'kl'; choose one of minmax"),
        ({"rounding": "adaround"}, "choose gptq or nearest"),
        ({"percentile": 0.0}, "percentile must be in"),
        ({"min_speedup_kept": 1.5}, "min_speedup_kept is the fraction"),
        ({"max_latency_ratio": 0.0}, "max_latency_ratio must be a positive number"),
        ({"max_latency_ms": -1.0}, "max_latency_ms must be a positive number"),
        ({"latency_rounds": 0}, "latency_rounds must be a whole number"),
        ({"percentile": 100.5}, "percentile must be in"),
        ({"samples": 0}, "calibration samples must be at least 1"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"equalize_samples": 0}, "equalize_samples must be"),
        ({"sensitivity_samples": 2.5}, "sensitivity_samples must be"),
        ({"threads": -1}, "threads must be"),
        ({"equalize_headroom": 0.0}, "equalize_headroom must be a positive number"),
        ({"stream_alpha": 1.5}, "stream_alpha must be between 0 and 1"),
        ({"equalize_alpha_dense": -0.1}, "equalize_alpha_dense must be between 0 and 1"),
        ({"min_agreement": 97}, "min_agreement is a fraction between 0 and 1"),
        ({"min_sqnr_db": float("nan")}, "min_sqnr_db must be a finite number"),
        ({"max_float_layers": 2}, "give min_sqnr_db or min_agreement with it"),
        ({"max_float_layers": -1, "min_sqnr_db": 20.0}, "max_float_layers must be"),
        ({"equalize": "yes"}, "equalize must be True or False"),
        ({"float_stem": 1}, "float_stem must be True, False or None"),
        ({"float_choices": "timed"}, "unknown float_choices 'timed'; choose spec or measured"),
        ({"float_cost_per_db": -0.1}, "float_cost_per_db is the latency"),
        ({"exclude": "Conv_0"}, "exclude must be a list of node names"),
    ],
)
def test_bad_values_are_refused_with_one_line_saying_what_to_do(kw: dict, match: str) -> None:
    with pytest.raises(PassOptionError, match=match) as info:
        PtqOptions(**kw)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_exclude_is_kept_as_a_tuple_and_options_are_frozen() -> None:
    options = PtqOptions(exclude=["Conv_4"], min_sqnr_db=30.0, max_float_layers=1)
    assert options.exclude == ("Conv_4",) and options.fallback and options.wants_sensitivity
    with pytest.raises(AttributeError):
        options.method = "mse"  # type: ignore[misc]


def test_report_keeps_the_report_schema() -> None:
    """report.json's quantization.options: the same keys (and values) as before PtqOptions."""
    _, summary = quantize(_models.block_model(), _models.images(16), PtqOptions(samples=16))
    assert summary.options == {
        "percentile": 99.99,
        "float_stem": True,
        "equalize": True,
        "equalize_headroom": 2.0,
        "stream_alpha": 0.5,
        "range_search": True,
        "residual_shrink": True,
        "rounding": "gptq",
        "bias_correction": True,
        "overflow_guard": True,
        "overflow_weights": "7bit",
        "min_sqnr_db": None,
        "min_agreement": None,
    }
    off = PtqOptions(method="minmax", equalize=False, float_stem=False).report(float_stem=False)
    assert off["percentile"] is None and off["equalize_headroom"] is None
    assert off["stream_alpha"] is None and off["float_stem"] is False


def test_steps_run_in_order_and_skip_what_the_options_turn_off() -> None:
    steps = default_steps()
    check_order(steps)
    assert [s.name for s in steps] == [
        "smoothing", "equalize", "calibrate", "range_search", "rounding", "overflow_guard",
        "residual_ranges", "bias_correction", "float_choices", "sensitivity", "insert_qdq",
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match="'rounding' needs plan"):
        check_order([Rounding(), Calibration()])
    options = PtqOptions(
        samples=16,
        rounding="nearest",
        range_search=False,
        equalize=False,
        overflow_guard=False,
        smooth_alpha=None,
    )
    _, summary = quantize(_models.block_model(), _models.images(16), options)
    assert summary.rounded_layers == 0
    assert list(summary.seconds) == ["calibrate", "bias_correction", "insert_qdq", "total"]
