"""INT8 post-training quantization: calibration, Q/DQ insertion, equalization,
data-aware rounding, bias correction and sensitivity-driven float fallback.

One entry point, `quantize(model, calibration, options, spec=...)`, runs these
steps on a copy of the float model (the input model is not modified). Every
choice below is a field of one `PtqOptions` (`options.py`, the only place the
defaults are written); each step is a small object over one shared state
(`steps.py`) that calls its module for the math:

0. `float_stem` (default: the spec's, on for both flavours) — the stem (the Conv
   reading the model input and the depthwise Convs right after it) computes in
   float, weights still int8 (`plan.stem_nodes`); then `smooth_alpha` (0.7) —
   SmoothQuant migration of each activation weighted MatMuls read into their weights,
   so its one static scale is not spent on LayerNorm's outlier channels (`smooth.py`;
   a CNN has no such MatMul and is untouched; all-MiniLM-L6 0.9858 -> 0.9978 cosine);
1. `equalize` — exact equalization of linear streams (residual connections) and
   activation-range equalization of Conv → Relu/Clip → Conv pairs (alpha 1 into
   depthwise Convs, `equalize_alpha_dense` into dense ones; statistics from
   `equalize_samples` samples; `equalize.py`);
2. calibration — one pass over the data: a histogram per tensor that needs a
   range (`calibrate.py`), and the input second moments of each weighted layer
   over the first `rounding_samples` samples;
3. `range_search` — each range read only by linear ops (Conv, Gemm, MatMul,
   GlobalAveragePool) is re-chosen by the error it causes in those readers'
   outputs on `range_samples` samples (`range_search.py`);
4. `rounding` — GPTQ rounding of the int8 weights, or ``"nearest"`` (`rounding.py`);
   then `overflow_guard` — the layers whose uint8 x int8 kernel overflows int16 on
   this CPU (AVX2 without VNNI; measured against exact arithmetic on
   `overflow_samples` samples) have their weights stored as uint8 in every Q/DQ
   model built from here on (`overflow.py`);
   then, with the range search, `residual_ranges` — the residual stream's quantized
   copies (Add outputs) keep their calibrated ranges or take their observed min/max,
   whichever gives the first output the higher SQNR as onnxruntime's int8 kernels run
   it, fitted on the first half of 32 calibration samples and judged on the second;
   then each residual group (a chain of residual Adds with the tensors they merge) has
   its ranges shrunk by the factor that output SQNR picks (`residual_shrink`;
   MobileNetV2's last stage at 0.35x: 21.7 -> 23.6 dB held-out)
   (`residual_ranges.py`; no residual Adds: no trial);
5. `bias_correction` — the per-channel mean shift each quantized layer adds is
   measured on `bias_correction_samples` samples and removed (`bias_correction.py`);
   then, with `float_choices="measured"` (`--auto-fallback` sets it), the spec's float
   stem and float skip path are each timed against all-INT8 on this machine and scored
   on the sensitivity subset, and kept only when they cost at most `float_cost_per_db`
   of all-INT8's latency per dB they buy (`float_choices.py`; the default takes the
   spec's rules, so one input gives one artifact on every machine);
6. `sensitivity` / `min_sqnr_db` / `min_agreement` — per-layer sensitivity (one
   layer int8 with its own bias correction, the rest exact FP32) and float fallback
   until the budget holds on a calibration subset (`sensitivity.py`), best accuracy
   gain per latency cost first (each layer's cost profiled on this machine,
   `layer_latency.py`) and within `min_speedup_kept` of all-INT8's saving over FP32;
   the biases are corrected again for the layers that stay float. Opt-in: a float layer runs
   at FP32 speed and every float island costs a dequantize/quantize boundary and
   layout changes (17 float layers: MobileNetV2 at 0.82x FP32 latency against
   0.52x all-int8 in an earlier run; since the float skip path, the 0.97 budget
   keeps 2 layers besides the stem: 0.53x against 0.50x,
   bench/results/quantize_compare.json; their int8 weights are folded by
   onnxruntime at load, `fold.py`);
7. Q/DQ insertion as the target's `QuantSpec` says (`qdq.py`), with the float choices
   the spec's rules (or their measurement) took: a float stem, and chained residual
   Adds in float (`QuantSpec.float_skip`, off by default on the CPU flavour);
8. large embedding tables (a Gather on a constant table) are stored as int8 rows
   with per-row scales and dequantized after the lookup (`embedding.py`).

A transformer (a layer normalization, an attention op or a MatMul of two computed
tensors, `transformer.py`) gets its target's transformer spec: only the weighted
MatMul/Gemm run in int8; LayerNorm, Softmax, GELU, residual Adds and the attention
MatMuls stay float. A CNN matches none of these and keeps its spec.

In `steps.py`, 0 is part of `start` (the state the steps share) and 1-7 are
`Equalization`, `Calibration`, `RangeSearch`, `Rounding` (its Hessians are
gathered by the calibration pass: `Step.collect`), `OverflowGuard`, `ResidualRanges`, `BiasCorrection`,
`Sensitivity` and `QdqInsertion`.

Defaults, chosen by measurement on the zoo's MobileNetV2 (int8 run by
onnxruntime's CPU kernels; bench/quantize_compare.py). Choices made since the
range search use a validation split of *calibration* crops (samples 256-512)
beside the held-out crops, so they are not tuned on the reported numbers.
Percentile 99.99 ranges (logit SQNR of activation-only quantization: minmax
12.8 dB, mse 15.1, entropy 2.5, percentile 99.9 / 99.99 / 99.999: 15.9 / 19.0 /
14.5); GPTQ (weight-only SQNR 18.8 → 29.9 dB); float stem (+1.1 dB for 0.508x →
0.529x FP32 latency, block-paired, with its weights folded at load); bias correction (+0.2–2 dB, more with round-to-nearest). Range search
with dense equalization at 0.5: validation 20.4 → 21.9 dB, held-out 20.5 → 21.8
dB (search alone +0.6 / +0.9; searching the residual stream's tensors too lost
0.3–0.5 dB, so they keep their percentile ranges). About 25 s for 256 samples on
2 cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_ir as ir

from passes.quantize.calibrate import METHODS
from passes.quantize.data import CalibrationSource
from passes.quantize.embedding import QuantizeEmbeddingsPass
from passes.quantize.options import PtqOptions
from passes.quantize.qdq import InsertQdqPass, count_qdq
from passes.quantize.spec import CPU_SPEC, TENSORRT_SPEC, QuantSpec, spec_by_name
from passes.quantize.steps import Progress, PtqState, default_steps, run_steps, start

__all__ = [
    "CPU_SPEC",
    "METHODS",
    "TENSORRT_SPEC",
    "InsertQdqPass",
    "Progress",
    "PtqOptions",
    "QuantSpec",
    "QuantizationSummary",
    "count_qdq",
    "quantize",
    "spec_by_name",
]

logger = logging.getLogger(__name__)

_DEFAULTS = PtqOptions()


@dataclass
class QuantizationSummary:
    """What `quantize` did, for the report (`to_dict` is JSON-ready)."""

    spec: str
    method: str
    samples: int
    options: dict[str, object]
    qdq_counts: dict[str, dict[str, int]]
    kept_float: list[str]
    seconds: dict[str, float]
    #: SmoothQuant's migration (`smooth.SmoothSummary.to_dict`; None: no group smoothed)
    smoothing: dict[str, object] | None = None
    equalized_pairs: int = 0
    equalized_streams: int = 0
    bias_corrected: int = 0
    #: each bias-corrected layer's local output SQNR (dB) before correction (bias_correction.py)
    layer_sqnr_db: dict[str, float] = field(default_factory=dict)
    rounded_layers: int = 0
    rounding_skipped: dict[str, str] = field(default_factory=dict)  # layer -> why not GPTQ
    calibration_sqnr_db: float | None = None
    sensitivity: dict[str, dict[str, float]] | None = None
    #: the float fallback's latency bound and outcome (None: no fallback asked)
    fallback: dict[str, object] | None = None
    #: every fallback candidate: accuracy gain, latency cost, whether it was kept float
    fallback_trade: list[dict[str, object]] | None = None
    embedding_tables: list[str] = field(default_factory=list)  # stored as int8 rows
    #: the residual stream's range trial: choice, tensors, each variant's SQNR (None: off)
    residual_ranges: dict[str, object] | None = None
    #: the int8-kernel overflow check: layers probed, stored as uint8, worst (None: off)
    overflow: dict[str, object] | None = None
    #: the spec's float choices timed and scored here, and kept or dropped (None: the
    #: spec's rules, unmeasured)
    float_choices: dict[str, object] | None = None
    mode: str = "static"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def quantize(
    model: ir.Model,
    calibration: CalibrationSource,
    options: PtqOptions = _DEFAULTS,
    *,
    spec: QuantSpec = CPU_SPEC,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Progress | None = None,
) -> tuple[ir.Model, QuantizationSummary]:
    """Quantize a float model to INT8 Q/DQ form (see module docstring); returns (model, summary).

    `calibration` is any `CalibrationSource`; `preprocess` turns one image of a folder
    source into a model input; `progress(stage, done, total)` follows the long steps.
    Raises `PassInputError` for a bad model or calibration data, `PassOptionError`
    for options that do not fit the model (unknown nodes to keep in float).
    """
    t_start = time.perf_counter()
    state = start(model, calibration, options, spec=spec, preprocess=preprocess, progress=progress)
    run_steps(state, default_steps())
    assert state.quantized is not None  # the last step writes it
    embeddings = QuantizeEmbeddingsPass()
    embeddings(state.quantized)
    state.seconds["total"] = time.perf_counter() - t_start
    summary = _summary(state)
    summary.embedding_tables = embeddings.tables
    logger.info("quantized %s: %s", state.spec.name, summary.qdq_counts)
    return state.quantized, summary


def _summary(state: PtqState) -> QuantizationSummary:
    options, quantized = state.options, state.quantized
    assert quantized is not None
    score = state.score
    return QuantizationSummary(
        spec=state.spec.name,
        method=options.method,
        samples=state.samples,
        options=options.report(state.spec.float_stem),
        qdq_counts=count_qdq(quantized),
        kept_float=[n.name or "" for n in state.model.graph if n.name in state.excluded]
        + state.kept,
        seconds={k: round(v, 3) for k, v in state.seconds.items()},
        smoothing=state.smoothing,
        equalized_pairs=state.equalized_pairs,
        equalized_streams=state.equalized_streams,
        bias_corrected=state.bias_corrected,
        layer_sqnr_db=dict(state.layer_sqnr_db),
        rounded_layers=len(state.weights),
        rounding_skipped={} if state.hessians is None else dict(state.hessians.skipped),
        calibration_sqnr_db=None if score is None else round(score.sqnr_db, 3),
        sensitivity=state.sensitivity,
        fallback=state.fallback,
        fallback_trade=state.fallback_trade,
        residual_ranges=None if state.residual is None else state.residual.record(),
        overflow=None if state.overflow is None else state.overflow.to_dict(),
        float_choices=state.float_choices,
    )
