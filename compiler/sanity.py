"""Warnings a run owes its reader when no budget asked: "passed" must never hide a model
the compile broke (30% channel pruning of the random-weight resnet18 gave top-1 agreement
0.031 and cosine 0.71, and the summary said "passed yes").

Without an accuracy budget, a compiled model far below its FP32 original (top-1 agreement
under 0.9 for class scores, else mean cosine under 0.99) gets a warning in the summary and
in `report.warnings`; a zoo model with random weights says so, since agreement with an
untrained model says little about a trained one.

A run also warns about flags it cannot follow (`--calib` on an fp32 run) and about
static INT8 ranges calibrated on fewer than `MIN_CALIB_SAMPLES` samples: these
go to `report.warnings` and to the `compiler.warnings` logger, which the CLI
prints as one `edgec: warning: ...` line each, when they are found.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from compiler.config import CompileConfig
from compiler.evaluate import Accuracy

#: the logger whose records the CLI prints as `edgec: warning: ...` lines
warnings_log = logging.getLogger("compiler.warnings")

#: static INT8 ranges from fewer calibration samples than this miss the tails of real data
MIN_CALIB_SAMPLES = 32

#: below these, without a budget, the summary warns
MIN_AGREEMENT = 0.9
MIN_COSINE = 0.99


def accuracy_warnings(accuracy: Accuracy, *, budgeted: bool) -> list[str]:
    """The warning for an unbudgeted result far below FP32 (pruning changes an fp32 run too)."""
    if budgeted:
        return []
    if accuracy.top1_agreement is not None:
        if accuracy.top1_agreement < MIN_AGREEMENT:
            return [
                f"top-1 agreement with FP32 is {accuracy.top1_agreement:.3g} (< {MIN_AGREEMENT}): "
                "the compiled model is far from the original; set --min-accuracy to fail the run"
            ]
        return []
    if accuracy.cosine < MIN_COSINE:  # NaN compares False: a NaN cosine is caught below
        return [
            f"cosine similarity to FP32 is {accuracy.cosine:.3g} (< {MIN_COSINE}): the compiled "
            "model is far from the original; set --min-accuracy to fail the run"
        ]
    if accuracy.cosine != accuracy.cosine:
        return ["the compiled model's outputs are not finite (NaN)"]
    return []


def weights_warnings(weights_source: str | None) -> list[str]:
    """A zoo model with random weights says so."""
    if weights_source and weights_source.startswith("random"):
        return [f"weights are {weights_source}: accuracy is against an untrained model"]
    return []


def warn(messages: list[str]) -> list[str]:
    """Log each message on `warnings_log` (the CLI prints it now); returns them for the report."""
    for message in messages:
        warnings_log.warning("%s", message)
    return messages


def ignored_flag_warnings(config: CompileConfig) -> list[str]:
    """Calibration flags on a run that calibrates nothing (fp32 without QAT)."""
    if config.precision != "fp32" or config.qat:
        return []
    given = [
        flag
        for flag, value in (
            ("--calib", config.calib_source),
            ("--calib-method", config.calib_method),
            ("--calib-samples", config.calib_samples),
            ("--int8-overflow", config.int8_overflow),
        )
        if value is not None
    ]
    if not given:
        return []
    verb = "is" if len(given) == 1 else "are"
    return [
        f"{', '.join(given)} {verb} ignored: an fp32 run calibrates nothing "
        "(add --precision int8, fp16 or auto to use calibration data)"
    ]


def calibration_warnings(quantization: Mapping[str, Any] | None) -> list[str]:
    """Static INT8 ranges from fewer than `MIN_CALIB_SAMPLES` calibration samples."""
    if not quantization or str(quantization.get("method", "")).startswith("qat"):
        return []
    if quantization.get("mode", "static") != "static":
        return []
    samples = quantization.get("samples")
    if not isinstance(samples, int) or samples >= MIN_CALIB_SAMPLES:
        return []
    return [
        f"static INT8 ranges were calibrated on {samples} samples; at least "
        f"{MIN_CALIB_SAMPLES} are recommended (few samples miss the tails of real data): "
        "give more with --calib (and --calib-samples)"
    ]


def fallback_warnings(quantization: Mapping[str, Any] | None) -> list[str]:
    """--auto-fallback that could not reach its accuracy budget (within its latency bound)."""
    fallback = (quantization or {}).get("fallback")
    if not isinstance(fallback, Mapping) or fallback.get("accuracy_met", True):
        return []
    kept = [t for t in (quantization or {}).get("fallback_trade") or [] if t.get("kept_float")]
    target, sqnr_target = fallback.get("min_agreement"), fallback.get("min_sqnr_db")
    agreement_budget = f" (budget {target})" if target is not None else ""
    reached = [f"top-1 agreement {fallback.get('agreement')}{agreement_budget}"]
    if sqnr_target is not None:
        reached.append(f"SQNR {fallback.get('sqnr_db')} dB (budget {sqnr_target} dB)")
    why = {
        "latency": (
            f"within the latency bound ({fallback.get('latency_bound_ratio')}x FP32; all-INT8 "
            f"{fallback.get('int8_latency_ratio')}x): lower --fallback-speedup-kept "
            "to trade more speed for accuracy"
        ),
        "max_layers": "within the most layers allowed in float",
        "bias_correction": (
            f"as chosen: the choice reached agreement {fallback.get('choice_agreement')}, "
            "then the biases corrected again for its float layers lost it"
        ),
    }.get(str(fallback.get("limited_by")), "even with every candidate layer in float")
    return [
        f"--auto-fallback kept {len(kept)} layer(s) in float and reached"
        f" {' and '.join(reached)} on the calibration subset: "
        f"the accuracy budget cannot be met {why}; this is the most accurate model found "
        "within the bound"
    ]
