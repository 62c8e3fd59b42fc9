"""INT8 post-training quantization: calibration, Q/DQ insertion, equalization,
data-aware rounding, bias correction and sensitivity-driven float fallback.

One entry point, `quantize(model, calibration, spec=...)`, runs these steps on a
copy of the float model (the input model is not modified):

0. `float_stem` (default: the spec's, on for both flavours) — the stem (the Conv
   reading the model input and the depthwise Convs right after it) computes in
   float, weights still int8 (`plan.stem_nodes`);
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
5. `bias_correction` — the per-channel mean shift each quantized layer adds is
   measured on `bias_correction_samples` samples and removed (`bias_correction.py`);
6. `sensitivity` / `min_sqnr_db` / `min_agreement` — per-layer sensitivity (one
   layer int8 with its own bias correction, the rest exact FP32) and float fallback
   until the budget holds on a calibration subset (`sensitivity.py`); the biases
   are corrected again for the layers that stay float. Opt-in: a float layer runs
   at FP32 speed and every float island costs a dequantize/quantize boundary and
   layout changes (17 float layers: MobileNetV2 at 0.82x FP32 latency against
   0.52x all-int8 in an earlier run; since the float skip path, the 0.97 budget
   keeps 2 layers besides the stem: 0.53x against 0.50x,
   bench/results/quantize_compare.json; their int8 weights are folded by
   onnxruntime at load, `fold.py`);
7. Q/DQ insertion as the target's `QuantSpec` says (`qdq.py`); on the CPU
   flavour chained residual Adds add in float (`QuantSpec.float_skip`).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from compiler.ground.errors import InvalidInput, UsageError
from passes import graph_tools
from passes.quantize.bias_correction import copy_biases, correct_bias
from passes.quantize.calibrate import METHODS, Histogram, run_with_outputs
from passes.quantize.data import CalibrationSource, CalibrationStream, model_inputs
from passes.quantize.equalize import equalize as equalize_model
from passes.quantize.plan import plan_quantization, stem_nodes
from passes.quantize.qdq import InsertQdqPass, count_qdq, is_quantized
from passes.quantize.range_search import search_ranges
from passes.quantize.rounding import HessianCollector, round_weights
from passes.quantize.sensitivity import Evaluator, auto_fallback, layer_sensitivity
from passes.quantize.spec import CPU_SPEC, TENSORRT_SPEC, QuantSpec, spec_by_name

__all__ = [
    "CPU_SPEC",
    "DEFAULT_METHOD",
    "METHODS",
    "TENSORRT_SPEC",
    "InsertQdqPass",
    "QuantSpec",
    "QuantizationSummary",
    "count_qdq",
    "quantize",
    "spec_by_name",
]

logger = logging.getLogger(__name__)

# Chosen by measurement on the zoo's MobileNetV2 (bench/quantize_compare.py).
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.99

Progress = Callable[[str, int, int | None], None]


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
    equalized_pairs: int = 0
    equalized_streams: int = 0
    bias_corrected: int = 0
    rounded_layers: int = 0
    calibration_sqnr_db: float | None = None
    sensitivity: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def quantize(
    model: ir.Model,
    calibration: CalibrationSource,
    *,
    spec: QuantSpec = CPU_SPEC,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    samples: int | None = 256,
    equalize: bool = True,
    equalize_pairs: bool = True,
    equalize_headroom: float = 2.0,
    equalize_alpha_dense: float = 0.5,
    stream_alpha: float = 0.5,
    range_search: bool = True,
    rounding: str = "gptq",
    bias_correction: bool = True,
    exclude: Sequence[str] = (),
    float_stem: bool | None = None,
    min_sqnr_db: float | None = None,
    min_agreement: float | None = None,
    max_float_layers: int | None = None,
    sensitivity: bool = False,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 8,
    equalize_samples: int = 64,
    rounding_samples: int = 32,
    range_samples: int = 32,
    bias_correction_samples: int = 64,
    sensitivity_samples: int = 32,
    threads: int = 0,
    progress: Progress | None = None,
) -> tuple[ir.Model, QuantizationSummary]:
    """Quantize a float model to INT8 Q/DQ form (see module docstring); returns (model, summary).

    Raises InvalidInput for bad calibration data (exit code 4), UsageError for bad options.
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise UsageError(
            f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}"
        )
    if rounding not in ("gptq", "nearest"):
        raise UsageError(f"unknown weight rounding {rounding!r}; choose gptq or nearest")
    if is_quantized(model):
        raise InvalidInput(
            "the model is already quantized (it holds QuantizeLinear/DequantizeLinear nodes)"
        )
    seconds: dict[str, float] = {}
    work = graph_tools.clone(model)
    graph_tools.ensure_types(work)
    ir.passes.common.NameFixPass()(work)
    unknown = set(exclude) - {n.name for n in work.graph}
    if unknown:
        raise UsageError(f"cannot keep unknown nodes in float: {', '.join(sorted(unknown))}")
    if float_stem is not None and float_stem != spec.float_stem:
        spec = spec.replace(float_stem=float_stem)
    excluded = frozenset(exclude) | frozenset(stem_nodes(work.graph) if spec.float_stem else ())
    stream = CalibrationStream(
        calibration,
        model_inputs(work),
        samples=samples,
        batch_size=batch_size,
        preprocess=preprocess,
    )

    def report(stage: str) -> Callable[[int, int | None], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    # 1. equalization
    pairs_done = streams_done = 0
    if equalize:
        t = time.perf_counter()
        pairs_done, streams_done = equalize_model(
            work,
            stream.take(equalize_samples),
            headroom=equalize_headroom,
            stream_alpha=stream_alpha,
            pairs=equalize_pairs,
            alpha_dense=equalize_alpha_dense,
            exclude=excluded,
            threads=threads,
        )
        seconds["equalize"] = time.perf_counter() - t

    # 2. calibration (+ Hessians for rounding), one pass
    t = time.perf_counter()
    plan = plan_quantization(work.graph, spec, excluded)
    hessians = HessianCollector(plan) if rounding == "gptq" else None
    stats = {n: Histogram() for n in plan.calibrated}
    names = list(dict.fromkeys([*plan.calibrated, *(hessians.names if hessians else [])]))
    seen = {"samples": 0}

    def visit(name: str, array: np.ndarray) -> None:
        if name in stats:
            stats[name].update(array)
        if hessians is not None and seen["samples"] < rounding_samples:
            hessians.visit(name, array)

    def batches() -> Iterable[dict[str, np.ndarray]]:
        for feeds in stream:
            yield feeds
            seen["samples"] += next(iter(feeds.values())).shape[0]

    n_samples = run_with_outputs(
        work,
        names,
        batches(),
        visit,
        progress=report("calibrate"),
        total=stream.total,
        threads=threads,
    )
    if n_samples == 0:
        raise InvalidInput("calibration data is empty")
    seconds["calibrate"] = time.perf_counter() - t
    levels = spec.activation_qrange[1] - spec.activation_qrange[0]
    options = {"levels": levels, "symmetric": spec.activation_symmetric}
    if method == "percentile":
        options["percentile"] = percentile
    ranges = {n: h.range(method, **options) for n, h in stats.items()}  # type: ignore[arg-type]
    if range_search:
        t = time.perf_counter()
        ranges = search_ranges(
            work, plan, spec, ranges, stats, stream.take(range_samples), threads=threads
        )
        seconds["range_search"] = time.perf_counter() - t

    # 3. weight rounding
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if hessians is not None:
        t = time.perf_counter()
        weights = round_weights(hessians, spec)
        seconds["rounding"] = time.perf_counter() - t

    def build(float_model: ir.Model, keep_float: frozenset[str] = excluded) -> ir.Model:
        q = graph_tools.clone(float_model)
        InsertQdqPass(spec, ranges, exclude=keep_float, weights=weights)(q)
        return q

    # 4. bias correction (of the fully quantized model; redone below if layers stay float)
    wants_sensitivity = sensitivity or min_sqnr_db is not None or min_agreement is not None
    uncorrected = graph_tools.clone(work) if bias_correction and wants_sensitivity else work
    # quantized nodes, and float-compute nodes whose weights are still int8
    bias_targets = list(dict.fromkeys([*plan.nodes, *(w.node.name or "" for w in plan.weights)]))

    def correct(model: ir.Model, keep_float: frozenset[str]) -> int:
        removed = correct_bias(
            model,
            lambda m: build(m, keep_float),
            bias_targets,
            lambda: stream.take(bias_correction_samples),
            threads=threads,
        )
        return len(removed)

    corrected = 0
    if bias_correction:
        t = time.perf_counter()
        corrected = correct(work, excluded)
        seconds["bias_correction"] = time.perf_counter() - t

    # 5. sensitivity and fallback
    kept: list[str] = []
    sens_dict = None
    final_score = None
    if wants_sensitivity:
        t = time.perf_counter()
        evaluator = Evaluator(uncorrected, stream.take(sensitivity_samples), threads=threads)
        layers = [n for n in plan.nodes if n not in excluded]

        def alone(_: ir.Model, others: frozenset[str]) -> ir.Model:
            # One layer int8 (with its own bias correction) in an otherwise exact FP32
            # model: other layers' weights stay float, or their int8 weights and
            # biases corrected for *their* quantization would set a common floor.
            variant = graph_tools.clone(uncorrected)
            if bias_correction:
                copy_biases(work, variant, set(layers) - others)
            InsertQdqPass(
                spec, ranges, exclude=others | excluded, weights=weights, excluded_weights=False
            )(variant)
            return variant

        sens = layer_sensitivity(
            uncorrected, alone, layers, evaluator, progress=report("sensitivity")
        )
        sens_dict = {k: {"sqnr_db": v.sqnr_db, "agreement": v.agreement} for k, v in sens.items()}
        if min_sqnr_db is not None or min_agreement is not None:
            kept, final_score = auto_fallback(
                work,
                lambda m, ex: build(m, ex),
                sens,
                evaluator,
                min_sqnr_db=min_sqnr_db if min_sqnr_db is not None else -float("inf"),
                min_agreement=min_agreement,
                max_layers=max_float_layers,
                exclude=excluded,
            )
            if kept and bias_correction:
                # the corrections were measured with these layers quantized: measure again
                work = graph_tools.clone(uncorrected)
                correct(work, excluded | frozenset(kept))
                final_score = evaluator(build(work, excluded | frozenset(kept)))
        seconds["sensitivity"] = time.perf_counter() - t

    # 6. final Q/DQ model
    t = time.perf_counter()
    quantized = build(work, excluded | frozenset(kept))
    seconds["insert_qdq"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start
    summary = QuantizationSummary(
        spec=spec.name,
        method=method,
        samples=n_samples,
        options={
            "percentile": percentile if method == "percentile" else None,
            "float_stem": spec.float_stem,
            "equalize": equalize,
            "equalize_headroom": equalize_headroom if equalize else None,
            "stream_alpha": stream_alpha if equalize else None,
            "range_search": range_search,
            "rounding": rounding,
            "bias_correction": bias_correction,
            "min_sqnr_db": min_sqnr_db,
            "min_agreement": min_agreement,
        },
        qdq_counts=count_qdq(quantized),
        kept_float=[n.name for n in work.graph if n.name in excluded] + kept,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        equalized_pairs=pairs_done,
        equalized_streams=streams_done,
        bias_corrected=corrected,
        rounded_layers=len(weights),
        calibration_sqnr_db=None if final_score is None else round(final_score.sqnr_db, 3),
        sensitivity=sens_dict,
    )
    logger.info("quantized %s: %s", spec.name, summary.qdq_counts)
    return quantized, summary
