"""The PTQ steps as small objects over one shared state; `quantize()` runs them in order.

NNCF splits a compression algorithm from the pipeline that feeds it statistics;
this module does the same on a small scale. Each step says what it needs, then
applies:

- `needs` names the `PtqState` fields an earlier step writes (`gives`);
  `check_order` refuses a step list in which a reader comes before its writer;
- `enabled(options)` says whether the options ask for the step at all;
- `collect(state)` returns the tensors the step wants to see during the one
  calibration pass (`Statistic`), so the histograms and GPTQ's Hessians are
  gathered by a single run over the data;
- `apply(state)` does the work by calling the step's own module (`equalize.py`,
  `calibrate.py`, `range_search.py`, `rounding.py`, `bias_correction.py`,
  `sensitivity.py`, `qdq.py`): the math lives there, not here.

`start` builds the state (the float working copy, the spec with its stem
choice, the nodes kept in float, the calibration stream); `run_steps` times each
enabled step into `state.seconds` under its `name`, which are the report's keys.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.errors import PassInputError, PassOptionError
from passes.quantize.bias_correction import copy_biases, correct_bias
from passes.quantize.calibrate import Histogram, run_with_outputs
from passes.quantize.data import CalibrationSource, CalibrationStream, model_inputs
from passes.quantize.equalize import equalize
from passes.quantize.float_choices import (
    NOISE_SIGMAS,
    ChoiceSet,
    Measured,
    decide,
    float_choices,
    median_error,
    report_rows,
)
from passes.quantize.layer_latency import (
    LatencyCosts,
    latency_ratio_rounds,
    layer_costs,
    median_ratios,
    one_call_feeds,
)
from passes.quantize.options import PtqOptions
from passes.quantize.overflow import (
    OverflowCheck,
    applies,
    guard,
    kernels_saturate,
    store_uint8,
)
from passes.quantize.plan import QuantPlan, plan_quantization, stem_nodes
from passes.quantize.qdq import InsertQdqPass, is_quantized
from passes.quantize.range_search import search_ranges
from passes.quantize.residual_ranges import (
    FitHistograms,
    ResidualChoice,
    choose_residual_ranges,
    residual_groups,
    residual_stream,
    skip,
)
from passes.quantize.rounding import HessianCollector, round_weights
from passes.quantize.sensitivity import (
    Evaluator,
    Score,
    Trade,
    budgeted_fallback,
    layer_sensitivity,
)
from passes.quantize.smooth import smooth
from passes.quantize.spec import QuantSpec
from passes.quantize.transformer import spec_for

logger = logging.getLogger(__name__)

__all__ = [
    "BiasCorrection",
    "Calibration",
    "Equalization",
    "FloatChoices",
    "OverflowGuard",
    "Progress",
    "PtqState",
    "QdqInsertion",
    "RangeSearch",
    "ResidualRanges",
    "Rounding",
    "Sensitivity",
    "Smoothing",
    "Statistic",
    "Step",
    "check_order",
    "default_steps",
    "run_steps",
    "start",
]

Progress = Callable[[str, int, int | None], None]
Range = tuple[float, float]
Weights = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class PtqState:
    """What the steps share: the float working copy and everything measured on it."""

    model: ir.Model  # the float working copy: equalized, then its biases corrected in place
    spec: QuantSpec  # with the options' float_stem applied
    options: PtqOptions
    stream: CalibrationStream
    excluded: frozenset[str]  # kept in float: options.exclude and the stem (if kept float)
    progress: Progress | None = None
    steps: Sequence[Step] = ()
    plan: QuantPlan | None = None
    stats: dict[str, Histogram] = field(default_factory=dict)
    samples: int = 0  # calibration samples seen
    ranges: dict[str, Range] = field(default_factory=dict)
    hessians: HessianCollector | None = None
    residual: ResidualChoice | None = None  # the residual stream's range trial
    residual_fit: FitHistograms | None = None  # its fitting histograms (calibration pass)
    weights: Weights = field(default_factory=dict)  # GPTQ-rounded weights; none: nearest
    overflow: OverflowCheck | None = None  # which layers' int8 kernels overflow here
    uncorrected: ir.Model | None = None  # the float copy before bias correction
    sensitivity: dict[str, dict[str, float]] | None = None
    kept: list[str] = field(default_factory=list)  # layers the fallback kept in float
    score: Score | None = None  # the final model's on the sensitivity subset (fallback only)
    fallback: dict[str, object] | None = None  # the fallback's latency bound and outcome
    fallback_trade: list[dict[str, object]] | None = None  # every candidate's gain and cost
    choices: ChoiceSet | None = None  # the float choices to measure (float_choices="measured")
    float_choices: dict[str, object] | None = None  # their measurement and outcome
    smoothing: dict[str, object] | None = None  # SmoothQuant's migration (None: none)
    equalized_pairs: int = 0
    equalized_streams: int = 0
    bias_corrected: int = 0
    layer_sqnr_db: dict[str, float] = field(default_factory=dict)  # local error, per layer
    quantized: ir.Model | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    # the fields `start` sets: a step may read them without an earlier step writing them
    INITIAL: ClassVar[frozenset[str]] = frozenset(
        {"model", "spec", "options", "stream", "excluded"}
    )

    @property
    def the_plan(self) -> QuantPlan:
        if self.plan is None:
            raise RuntimeError("no quantization plan yet: the calibration step makes it")
        return self.plan

    @property
    def bias_targets(self) -> list[str]:
        """Quantized nodes, and float-compute nodes whose weights are still int8."""
        plan = self.the_plan
        return list(dict.fromkeys([*plan.nodes, *(w.node.name or "" for w in plan.weights)]))

    def build(
        self,
        float_model: ir.Model,
        keep_float: frozenset[str] | None = None,
        ranges: Mapping[str, Range] | None = None,
        spec: QuantSpec | None = None,
    ) -> ir.Model:
        """A Q/DQ copy of `float_model` with the ranges (`ranges`, else those measured so
        far) and weights, as `spec` (else the state's) says."""
        # the IR's own clone (7 ms against the protobuf round trip's 35 ms on MobileNetV2)
        # shares the initializers' tensors: the Q/DQ insertion only adds and replaces
        # them, it never writes into one
        q = float_model.clone()
        exclude = self.excluded if keep_float is None else keep_float
        use = self.ranges if ranges is None else ranges
        InsertQdqPass(spec or self.spec, use, exclude=exclude, weights=self.weights)(q)
        if self.overflow is not None and self.overflow.uint8_weights:
            store_uint8(q, self.overflow.uint8_weights)
        return q

    def report(self, stage: str) -> Callable[[int, int | None], None] | None:
        """A progress callback for one stage (None when nobody listens)."""
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    def report_samples(self, stage: str, n: int) -> Callable[[int, int | None], None] | None:
        """A progress callback for one stage's pass over the first `n` samples of the
        stream: `total` is how many of them there are, whatever the runner says."""
        report = self.report(stage)
        if report is None:
            return None
        total = min(n, self.stream.total) if self.stream.total is not None else n
        return lambda done, _: report(min(done, total), total)


@dataclass(frozen=True)
class Statistic:
    """Tensors a step wants to see during the calibration pass, and from how many samples
    (a batch is visited when it starts before `samples`; None: every batch)."""

    names: Sequence[str]
    visit: Callable[[str, np.ndarray], None]
    samples: int | None = None


class Step(ABC):
    """One PTQ step (see the module docstring)."""

    name: ClassVar[str]  # its key in the report's seconds
    needs: ClassVar[frozenset[str]] = frozenset()  # state fields written by earlier steps
    gives: ClassVar[frozenset[str]] = frozenset()  # state fields it writes

    def enabled(self, options: PtqOptions) -> bool:
        return True

    def collect(self, state: PtqState) -> Statistic | None:
        """Tensors to see during the calibration pass (after the plan is made)."""
        return None

    @abstractmethod
    def apply(self, state: PtqState) -> None: ...


class Smoothing(Step):
    """SmoothQuant migration of the activations weighted MatMuls read (`smooth.py`),
    from `smooth_samples` samples: static INT8 quantizes each of them with one scale
    per tensor, which a transformer's LayerNorm outlier channels otherwise take.
    Graphs without such MatMuls (CNNs: Conv, Gemm) are left alone."""

    name = "smoothing"
    gives = frozenset({"model", "smoothing"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.smooth_alpha is not None

    def apply(self, state: PtqState) -> None:
        o = state.options
        assert o.smooth_alpha is not None
        summary = smooth(
            state.model,
            state.stream.take(o.smooth_samples),
            o.smooth_alpha,
            exclude=state.excluded,
            threads=o.threads,
        )
        state.smoothing = summary.to_dict() if summary.groups else None


class Equalization(Step):
    """Exact equalization of residual streams and activation-range equalization of
    Conv → Relu/Clip → Conv pairs, from `equalize_samples` samples (`equalize.py`)."""

    name = "equalize"
    gives = frozenset({"model", "equalized_pairs", "equalized_streams"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.equalize

    def apply(self, state: PtqState) -> None:
        o = state.options
        state.equalized_pairs, state.equalized_streams = equalize(
            state.model,
            state.stream.take(o.equalize_samples),
            headroom=o.equalize_headroom,
            stream_alpha=o.stream_alpha,
            pairs=o.equalize_pairs,
            alpha_dense=o.equalize_alpha_dense,
            exclude=state.excluded,
            threads=o.threads,
            progress=state.report_samples(self.name, o.equalize_samples),
        )


class Calibration(Step):
    """The plan, then one pass over the data: a histogram per planned tensor (`calibrate.py`)
    and every later step's `Statistic`; ranges by the options' method."""

    name = "calibrate"
    needs = frozenset({"model"})
    gives = frozenset({"plan", "stats", "samples", "ranges", "choices"})

    def apply(self, state: PtqState) -> None:
        o = state.options
        graph = state.model.graph
        plan = state.plan = plan_quantization(graph, state.spec, state.excluded)
        calibrated, covering = list(plan.calibrated), set(plan.covering)
        if o.float_choices == "measured":  # the ranges each float choice's alternative needs
            state.choices = float_choices(graph, state.spec, o.exclude)
            calibrated, covering = _with_alternatives(graph, state.choices, calibrated, covering)
        stats = state.stats = {n: Histogram() for n in calibrated}
        wanted = [Statistic(calibrated, lambda n, a: stats[n].update(a))]
        for step in state.steps:
            if step is not self and step.enabled(o):
                extra = step.collect(state)
                if extra is not None:
                    wanted.append(extra)
        state.samples = _one_pass(state, wanted)
        if state.samples == 0:
            raise PassInputError("calibration data is empty")
        levels = state.spec.activation_qrange[1] - state.spec.activation_qrange[0]
        symmetric = state.spec.activation_symmetric
        if o.method == "percentile":
            state.ranges = {
                n: h.range(o.method, levels=levels, symmetric=symmetric, percentile=o.percentile)
                for n, h in stats.items()
            }
        else:
            state.ranges = {
                n: h.range(o.method, levels=levels, symmetric=symmetric) for n, h in stats.items()
            }
        for n in covering:  # plan.py rule 5: an output's range holds all it saw
            state.ranges[n] = stats[n].cover(state.ranges[n], symmetric=symmetric)


def _with_alternatives(
    graph: ir.Graph, choices: ChoiceSet, calibrated: list[str], covering: set[str]
) -> tuple[list[str], set[str]]:
    """`calibrated` and `covering` with the tensors that the quantizations the float
    choices measure (`float_choices.py`: all-INT8, and each choice alone) need: an int8
    stem needs the input's and the stem's ranges. Those ranges are the calibration
    method's; the range search sees only the plan's own tensors."""
    names = dict.fromkeys(calibrated)
    for on in ((), *((n,) for n in choices.nodes)):
        spec, excluded = choices.config(on)
        other = plan_quantization(graph, spec, excluded)
        names.update(dict.fromkeys(other.calibrated))
        covering |= set(other.covering)
    return list(names), covering


def _one_pass(state: PtqState, wanted: Sequence[Statistic]) -> int:
    """Run the working model once over the stream, feeding each `Statistic` its tensors."""
    names = list(dict.fromkeys(n for s in wanted for n in s.names))
    members = [(s, frozenset(s.names)) for s in wanted]
    seen = 0

    def visit(name: str, array: np.ndarray) -> None:
        for s, these in members:
            if name in these and (s.samples is None or seen < s.samples):
                s.visit(name, array)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        nonlocal seen
        for feeds in state.stream:
            yield feeds
            seen += next(iter(feeds.values())).shape[0]

    return run_with_outputs(
        state.model,
        names,
        batches(),
        visit,
        progress=state.report("calibrate"),
        total=state.stream.total,
        threads=state.options.threads,
        max_batch=8,  # fetching every tensor: 8 runs 1.25x faster than 32 on MobileNetV2
    )


class RangeSearch(Step):
    """Re-choose each range read only by linear ops by the error it causes in their
    outputs on `range_samples` samples (`range_search.py`)."""

    name = "range_search"
    needs = frozenset({"model", "plan", "stats", "ranges"})
    gives = frozenset({"ranges"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.range_search

    def apply(self, state: PtqState) -> None:
        o = state.options
        state.ranges = search_ranges(
            state.model,
            state.the_plan,
            state.spec,
            state.ranges,
            state.stats,
            state.stream.take(o.range_samples),
            threads=o.threads,
            progress=state.report_samples(self.name, o.range_samples),
        )


#: measure-and-narrow rounds of the 7-bit remedy before what still overflows gets uint8
NARROWING_ROUNDS = 3


class OverflowGuard(Step):
    """Layers whose u8s8 kernel overflows on this CPU, measured on `overflow_samples`
    samples (`overflow.py`), and the remedy `overflow_weights` names: ``"7bit"``
    rounds their overflowing channels again (GPTQ) to ±63, which cannot overflow
    (2 * 255 * 63 < 2^15) and keeps the u8s8 kernel's speed, then measures again and
    narrows what overflows now, up to `NARROWING_ROUNDS` times;
    ``"uint8"`` (and whatever still overflows, and ``"7bit"`` without GPTQ's Hessians)
    stores their weights as uint8, the same values on a slower kernel, in every later
    Q/DQ build. After rounding (the weights are final), before anything
    judges the Q/DQ model in onnxruntime's optimized kernels (the residual trial, the
    fallback)."""

    name = "overflow_guard"
    needs = frozenset({"model", "ranges", "weights"})
    gives = frozenset({"overflow", "weights"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.overflow_guard

    def apply(self, state: PtqState) -> None:
        spec, o = state.spec, state.options
        if not applies(spec):
            return  # not onnxruntime's U8S8 form: other kernels
        if not kernels_saturate():
            state.overflow = OverflowCheck(saturating_kernels=False)
            return  # int32 accumulation here: no layer can overflow, no model is built
        check = guard(
            state.build(state.model), state.stream.take(o.overflow_samples), threads=o.threads
        )
        if check.overflowing and o.overflow_weights == "7bit" and state.hessians is not None:
            seven = spec.replace(reduce_range=True).weight_qmax
            row_qmax: dict[str, np.ndarray] = {}
            found = check
            for _ in range(NARROWING_ROUNDS):
                narrowed = []  # layers whose channels this round changes: GPTQ again
                for layer, qmax in found.row_qmax(spec.weight_qmax, seven).items():
                    new = np.minimum(row_qmax.get(layer, qmax), qmax)
                    if layer not in row_qmax or not np.array_equal(new, row_qmax[layer]):
                        row_qmax[layer] = new
                        narrowed.append(layer)
                if not narrowed:
                    break  # all their overflowing channels are 7-bit already: uint8 below
                state.weights.update(
                    round_weights(state.hessians, spec, layers=narrowed, row_qmax=row_qmax)
                )
                # the channels left at 8 bits were judged on these samples only, and a layer
                # fed by one that overflowed (saturated, smaller) may overflow once it is
                # fixed: measure again, narrow what overflows now
                found = guard(
                    state.build(state.model),
                    state.stream.take(o.overflow_samples),
                    threads=o.threads,
                )
                check.add(found)
                if not found.overflowing:
                    break
            check.seven_bit = {k: int((v == seven).sum()) for k, v in row_qmax.items()}
            check.uint8_weights = list(found.overflowing)  # still overflowing: uint8
        state.overflow = check


class Rounding(Step):
    """GPTQ rounding of the int8 weights (`rounding.py`), from the layer-input second
    moments the calibration pass gathers over the first `rounding_samples` samples."""

    name = "rounding"
    needs = frozenset({"plan"})
    gives = frozenset({"hessians", "weights"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.rounding == "gptq"

    def collect(self, state: PtqState) -> Statistic:
        hessians = state.hessians = HessianCollector(state.the_plan)
        return Statistic(hessians.names, hessians.visit, state.options.rounding_samples)

    def apply(self, state: PtqState) -> None:
        if state.hessians is None:
            raise RuntimeError("GPTQ rounding needs the calibration pass's Hessians")
        state.hessians.finish()
        state.weights = round_weights(state.hessians, state.spec, progress=state.report(self.name))


def _correct(
    state: PtqState,
    model: ir.Model,
    keep_float: frozenset[str],
    *,
    stage: str = "bias_correction",
    local_sqnr_db: dict[str, float] | None = None,
) -> int:
    """Correct `model`'s biases in place for quantization with `keep_float` in float."""
    o = state.options
    removed = correct_bias(
        model,
        lambda m: state.build(m, keep_float),
        state.bias_targets,
        lambda: state.stream.take(o.bias_correction_samples),
        threads=o.threads,
        progress=state.report_samples(stage, o.bias_correction_samples),
        local_sqnr_db=local_sqnr_db,
    )
    return len(removed)


class ResidualRanges(Step):
    """The residual stream's ranges, per model: the calibrated ones or observed min/max,
    whichever gives the first output the higher SQNR on held-out calibration samples
    (ranges fitted on the first half of the first `range_samples`, at most 32, judged on
    the second half; `residual_ranges.py`). No residual-stream Adds: nothing runs."""

    name = "residual_ranges"
    needs = frozenset({"model", "plan", "stats", "ranges", "weights"})
    gives = frozenset({"ranges", "residual"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.range_search

    @staticmethod
    def trial_samples(state: PtqState) -> int:
        total = state.stream.total
        n = min(state.options.range_samples, 32)
        return n if total is None else min(n, total)

    def collect(self, state: PtqState) -> Statistic | None:
        names = residual_stream(state.the_plan)
        if not names or state.options.method == "minmax":
            return None
        state.residual_fit = FitHistograms(names, self.trial_samples(state) // 2)
        return Statistic(names, state.residual_fit.visit)

    def apply(self, state: PtqState) -> None:
        o, fit = state.options, state.residual_fit
        levels = state.spec.activation_qrange[1] - state.spec.activation_qrange[0]
        n = self.trial_samples(state)
        half = fit.samples if fit is not None else n // 2
        state.ranges, state.residual = choose_residual_ranges(
            state.model,
            residual_stream(state.the_plan),
            state.ranges,
            state.stats,
            fit,
            lambda ranges: state.build(state.model, ranges=ranges),
            skip(state.stream.take(n), half),
            fitted=lambda h: h.range(
                o.method,
                levels=levels,
                symmetric=state.spec.activation_symmetric,
                percentile=o.percentile,
            ),
            symmetric=state.spec.activation_symmetric,
            method=o.method,
            groups=residual_groups(state.the_plan) if o.residual_shrink else None,
            threads=o.threads,
        )
        state.residual_fit = None


class BiasCorrection(Step):
    """Remove the per-channel mean shift each quantized layer adds, measured on
    `bias_correction_samples` samples (`bias_correction.py`); keeps the uncorrected
    float model when the sensitivity step will need it."""

    name = "bias_correction"
    needs = frozenset({"model", "plan", "ranges", "weights"})
    gives = frozenset({"model", "uncorrected", "bias_corrected", "layer_sqnr_db"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.bias_correction

    def apply(self, state: PtqState) -> None:
        if state.options.wants_sensitivity or state.choices is not None:
            state.uncorrected = graph_tools.clone(state.model)
        state.bias_corrected = _correct(
            state, state.model, state.excluded, local_sqnr_db=state.layer_sqnr_db
        )


#: the float choices' timing: rounds of paired blocks of calls per model (600 calls a
#: model, MobileNetV2's three models 5-9 s; at 300 calls its skip path measured 1.03-1.05x
#: all-INT8 in three runs and 0.99x in a fourth), bounded in seconds for a large model
CHOICE_ROUNDS = 60
CHOICE_BLOCK = 10
CHOICE_SECONDS = 30.0


class FloatChoices(Step):
    """The float choices (the float stem, the float skip path), each timed alone against
    all-INT8 on this machine and scored on `sensitivity_samples` samples, and kept only
    when it costs at most `float_cost_per_db` of all-INT8's latency per dB it buys,
    unless its cost is within the timing noise of that price (then the spec's rule
    stands; `float_choices.py`); the biases are corrected again when the outcome is not
    the spec's own."""

    name = "float_choices"
    needs = frozenset({"model", "plan", "ranges", "weights", "choices"})
    gives = frozenset({"model", "spec", "excluded", "plan", "float_choices"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.float_choices == "measured"

    def apply(self, state: PtqState) -> None:
        o, choices = state.options, state.choices
        if choices is None or not choices.nodes:
            state.float_choices = {"measured": True, "choices": []}
            return
        reference = state.uncorrected if state.uncorrected is not None else state.model
        evaluator = Evaluator(
            reference, state.stream.take(o.sensitivity_samples), threads=o.threads
        )
        configs = {"int8": (), **{n: (n,) for n in choices.nodes}}
        models = {k: _built(state, choices, on) for k, on in configs.items()}
        feeds = one_call_feeds(state.model, next(iter(state.stream.take(o.batch_size))))
        int8_ms, rounds = latency_ratio_rounds(
            models,
            feeds,
            baseline="int8",
            threads=o.threads,
            rounds=CHOICE_ROUNDS,
            block=CHOICE_BLOCK,
            max_seconds=CHOICE_SECONDS,
        )
        scores = {k: evaluator(m) for k, m in models.items()}
        measured = {
            n: Measured(
                scores[n].sqnr_db,
                scores["int8"].sqnr_db,
                float(np.median(rounds[n])),
                median_error(rounds[n]),
            )
            for n in choices.nodes
        }
        decided = decide(measured, o.float_cost_per_db, choices.by_spec)
        taken = frozenset(n for n, d in decided.items() if d.kept)
        if taken != choices.by_spec:
            state.spec, state.excluded = choices.config(taken)
            state.plan = plan_quantization(state.model.graph, state.spec, state.excluded)
            if o.bias_correction and state.uncorrected is not None:
                work = graph_tools.clone(state.uncorrected)
                _correct(state, work, state.excluded, stage="float_choices_bias_correction")
                state.model = work
        state.float_choices = {
            "measured": True,
            "cost_per_db": o.float_cost_per_db,
            "int8_ms": round(int8_ms, 4),
            "noise_sigmas": NOISE_SIGMAS,
            "choices": report_rows(choices, measured, decided),
        }
        logger.info("float choices: %s", state.float_choices["choices"])


def _built(state: PtqState, choices: ChoiceSet, on: Collection[str]) -> ir.Model:
    """The Q/DQ model with the float choices in `on` taken and the others not."""
    spec, excluded = choices.config(on)
    return state.build(state.model, excluded, spec=spec)


class Sensitivity(Step):
    """Per-layer sensitivity (one layer int8 with its own bias correction, the rest
    exact FP32), then, with a budget, float fallback until it holds on
    `sensitivity_samples` samples (`sensitivity.py`); the biases are corrected again
    for the layers that stay float."""

    name = "sensitivity"
    needs = frozenset({"model", "plan", "ranges", "weights", "uncorrected"})
    gives = frozenset({"model", "sensitivity", "kept", "score", "fallback", "fallback_trade"})

    def enabled(self, options: PtqOptions) -> bool:
        return options.wants_sensitivity

    def apply(self, state: PtqState) -> None:
        o = state.options
        uncorrected = state.uncorrected if state.uncorrected is not None else state.model
        evaluator = Evaluator(
            uncorrected, state.stream.take(o.sensitivity_samples), threads=o.threads
        )
        layers = [n for n in state.the_plan.nodes if n not in state.excluded]
        corrected = state.model

        def alone(_: ir.Model, others: frozenset[str]) -> ir.Model:
            # One layer int8 (with its own bias correction) in an otherwise exact FP32
            # model: other layers' weights stay float, or their int8 weights and
            # biases corrected for *their* quantization would set a common floor.
            variant = graph_tools.clone(uncorrected)
            if o.bias_correction:
                copy_biases(corrected, variant, set(layers) - others)
            InsertQdqPass(
                state.spec,
                state.ranges,
                exclude=others | state.excluded,
                weights=state.weights,
                excluded_weights=False,
            )(variant)
            return variant

        scores = layer_sensitivity(
            uncorrected, alone, layers, evaluator, progress=state.report("sensitivity")
        )
        state.sensitivity = {
            k: {"sqnr_db": v.sqnr_db, "agreement": v.agreement} for k, v in scores.items()
        }
        if o.fallback:
            self._fall_back(state, scores, evaluator, uncorrected)

    @staticmethod
    def _fall_back(
        state: PtqState, scores: dict[str, Score], evaluator: Evaluator, uncorrected: ir.Model
    ) -> None:
        o = state.options
        costs = _latency_costs(state, list(scores)) if o.latency_bounded else None
        bound = latency_bound(costs.int8_ratio, costs.fp32_ms, o) if costs is not None else None
        result = budgeted_fallback(
            state.model,
            state.build,
            scores,
            evaluator,
            min_sqnr_db=o.min_sqnr_db if o.min_sqnr_db is not None else -float("inf"),
            min_agreement=o.min_agreement,
            max_layers=o.max_float_layers,
            costs=None if costs is None else {n: costs.ratio(n) for n in costs.layers},
            budget=None if bound is None or costs is None else max(0.0, bound - costs.int8_ratio),
            exclude=state.excluded,
            progress=state.report("fallback"),
        )
        kept, score = result.kept, result.score
        verified = None
        if costs is not None and kept:
            kept, verified = _measured_within_bound(state, kept)
        if len(kept) < len(result.kept):  # the latency check returned layers to int8
            score = evaluator(state.build(state.model, state.excluded | frozenset(kept)))
        recorrected = None
        if kept and o.bias_correction:
            # the corrections were measured with these layers quantized: measure again, and
            # keep the result only if it scores no worse. It can score much worse: with
            # MobileNetV2's last residual Adds float, the corrections restored the means
            # its shrunk last stage clips on purpose (calibration subset 25 -> 19.9 dB)
            work = graph_tools.clone(uncorrected)
            _correct(
                state, work, state.excluded | frozenset(kept), stage="fallback_bias_correction"
            )
            again = evaluator(state.build(work, state.excluded | frozenset(kept)))
            recorrected = _rank(again, o) >= _rank(score, o)
            if recorrected:
                state.model, score = work, again
        state.kept, state.score = kept, score
        met = score.meets(o.min_sqnr_db, o.min_agreement)
        if not met and verified is not None and verified["returned_to_int8"]:
            limited_by: str | None = "latency"
        else:
            # "bias_correction": the choice met the budget, the biases corrected again for
            # its float layers then missed it
            limited_by = None if met else (result.limited_by or "bias_correction")
        state.fallback = {
            "accuracy_met": met,
            "limited_by": limited_by,
            "agreement": round(score.agreement, 4),
            "choice_agreement": round(result.score.agreement, 4),
            "min_agreement": o.min_agreement,
            "sqnr_db": round(score.sqnr_db, 3) if math.isfinite(score.sqnr_db) else None,
            "min_sqnr_db": o.min_sqnr_db,
            "min_speedup_kept": o.min_speedup_kept,
            "int8_latency_ratio": None if costs is None else round(costs.int8_ratio, 4),
            "latency_bound_ratio": None if bound is None else round(bound, 4),
            "predicted_latency_ratio": None
            if costs is None
            else round(costs.predicted_ratio(kept), 4),
            "fp32_ms": None if costs is None else round(costs.fp32_ms, 4),
            "cost_estimated": [] if costs is None else list(costs.estimated),
            # the additive costs against measurement: island models (every other
            # candidate float), latency / FP32 predicted and measured, paired
            "cost_checks": None
            if costs is None
            else {
                k: {"kernels": round(a, 4), "fitted": round(b, 4), "measured": round(c, 4)}
                for k, (a, b, c) in costs.checks.items()
            },
            "island_overhead_ms": None if costs is None else round(costs.island_overhead_ms, 4),
            # the chosen model timed whole against FP32 and all-INT8 (no profiler)
            "measured": verified,
            # biases corrected again for the float layers and kept (False: that scored
            # worse, the corrections measured all-INT8 stay; None: not tried)
            "biases_corrected_again": recorrected,
        }
        state.fallback_trade = _trade_rows(result.trades, costs, kept)


def _rank(score: Score, o: PtqOptions) -> tuple[bool, float, float]:
    """Order of two fallback outcomes: the budget held first, then SQNR, then agreement."""
    return score.meets(o.min_sqnr_db, o.min_agreement), score.sqnr_db, score.agreement


def _trade_rows(
    trades: Sequence[Trade], costs: LatencyCosts | None, kept: Collection[str]
) -> list[dict[str, object]]:
    """report.json's `quantization.fallback_trade`: every candidate in the order tried."""
    return [
        {
            "layer": t.layer,
            "sqnr_db": round(t.sqnr_db, 3) if math.isfinite(t.sqnr_db) else None,
            "gain": float(f"{t.gain:.4g}"),
            "latency_cost_ms": None if costs is None else round(costs.layers[t.layer].cost_ms, 4),
            "latency_cost": None if t.cost is None else round(t.cost, 5),
            "kept_float": t.layer in kept,
        }
        for t in trades
    ]


def _latency_costs(state: PtqState, layers: list[str]) -> LatencyCosts:
    """Each candidate's float-vs-int8 latency on this machine (`layer_latency.py`): the
    float working model, its all-INT8 form and two forms with every other candidate
    float, on one calibration call."""
    o = state.options
    first = next(iter(state.stream.take(o.batch_size)))
    order = {n.name: i for i, n in enumerate(state.model.graph)}
    return layer_costs(
        state.model,
        lambda kept: state.build(state.model, state.excluded | kept),
        sorted(layers, key=lambda n: order.get(n, len(order))),
        one_call_feeds(state.model, first),
        threads=o.threads,
        rounds=o.latency_rounds,
        progress=state.report("fallback_latency"),
    )


#: prefixes of the fallback's choice timed at most (lengths spaced geometrically from
#: 1 to the whole choice), so a long choice does not time dozens of models
MAX_TIMED_PREFIXES = 8


def _measured_within_bound(state: PtqState, kept: list[str]) -> tuple[list[str], dict[str, object]]:
    """Time FP32, all-INT8 and the model with each prefix of `kept` float (the layers in
    the order the fallback took them; `MAX_TIMED_PREFIXES` lengths at most), whole and
    paired in one run, without a profiler (`latency_ratio_rounds`: 600 calls each, at
    most a minute), and keep the longest prefix that measures within the bound
    (recomputed from this run's all-INT8 ratio) by `NOISE_SIGMAS` standard errors of
    its cost over all-INT8: a prefix the noise could put over the bound goes back to
    int8 with the layers after it. The additive costs are a prediction; this is what
    the fallback answers for."""
    o = state.options
    feeds = one_call_feeds(state.model, next(iter(state.stream.take(o.batch_size))))
    models = {"fp32": state.model, "int8": state.build(state.model, state.excluded)}
    k = len(kept)
    # every length, or geometrically spaced ones: the first layers taken have the best
    # gain per cost
    spots = MAX_TIMED_PREFIXES - 1
    lengths = (
        list(range(1, k + 1))
        if k <= MAX_TIMED_PREFIXES
        else sorted({max(1, round(k ** (i / spots))) for i in range(spots + 1)} | {k})
    )
    for n in lengths:
        models[f"kept_{n}"] = state.build(state.model, state.excluded | frozenset(kept[:n]))
    fp32_ms, rounds = latency_ratio_rounds(models, feeds, baseline="fp32", threads=o.threads)
    ratios = median_ratios(rounds)
    bound = latency_bound(ratios["int8"], fp32_ms, o)

    def error(tag: str) -> float:
        """The standard error of `tag`'s ratio, from its per-round ratio to all-INT8."""
        per_round = [a / b for a, b in zip(rounds[tag], rounds["int8"], strict=True) if b > 0]
        return median_error(per_round) * ratios["int8"]

    within = [
        n
        for n in lengths
        if bound is None or ratios[f"kept_{n}"] + NOISE_SIGMAS * error(f"kept_{n}") <= bound
    ]
    n = max(within, default=0)
    if n < k:
        logger.info(
            "fallback: %d float layers measure %.3fx FP32, over the bound %.3fx: %d kept",
            k,
            ratios[f"kept_{k}"],
            bound,
            n,
        )
    return kept[:n], {
        "fp32_ms": round(fp32_ms, 4),
        "int8_latency_ratio": round(ratios["int8"], 4),
        "latency_ratio": round(ratios[f"kept_{n}"] if n else ratios["int8"], 4),
        "latency_error": round(error(f"kept_{n}"), 4) if n else 0.0,
        "latency_bound_ratio": None if bound is None else round(bound, 4),
        "returned_to_int8": kept[n:][::-1],
    }


def latency_bound(int8_ratio: float, fp32_ms: float, options: PtqOptions) -> float | None:
    """The latency (a fraction of FP32's) the fallback's model may reach: all-INT8's
    (`int8_ratio`) plus (1 - `min_speedup_kept`) of the time INT8 saves, and at most
    `max_latency_ratio` and `max_latency_ms` (None: no bound). A bound below all-INT8's
    allows no fallback."""
    r8 = int8_ratio
    bounds = []
    if options.min_speedup_kept is not None:
        bounds.append(r8 + (1 - options.min_speedup_kept) * max(0.0, 1 - r8))
    if options.max_latency_ratio is not None:
        bounds.append(options.max_latency_ratio)
    if options.max_latency_ms is not None and fp32_ms > 0:
        bounds.append(options.max_latency_ms / fp32_ms)
    return min(bounds) if bounds else None


class QdqInsertion(Step):
    """The final Q/DQ model, as the target's `QuantSpec` says (`qdq.py`)."""

    name = "insert_qdq"
    needs = frozenset({"model", "ranges", "weights", "kept"})
    gives = frozenset({"quantized"})

    def apply(self, state: PtqState) -> None:
        state.quantized = state.build(state.model, state.excluded | frozenset(state.kept))


def default_steps() -> tuple[Step, ...]:
    """PTQ's steps in their order (see the `passes.quantize` module docstring)."""
    return (
        Smoothing(),
        Equalization(),
        Calibration(),
        RangeSearch(),
        Rounding(),
        OverflowGuard(),
        ResidualRanges(),
        BiasCorrection(),
        FloatChoices(),
        Sensitivity(),
        QdqInsertion(),
    )


def check_order(steps: Iterable[Step], initial: Collection[str] = PtqState.INITIAL) -> None:
    """Refuse a step list in which a step reads state no earlier step writes."""
    written = set(initial)
    for step in steps:
        missing = sorted(step.needs - written)
        if missing:
            raise RuntimeError(
                f"PTQ step {step.name!r} needs {', '.join(missing)}, which no earlier step gives"
            )
        written |= step.gives


def run_steps(state: PtqState, steps: Sequence[Step]) -> None:
    """Run the enabled steps in order over `state`, timing each under its name."""
    check_order(steps)
    state.steps = steps
    for step in steps:
        if step.enabled(state.options):
            t = time.perf_counter()
            step.apply(state)
            state.seconds[step.name] = time.perf_counter() - t


def start(
    model: ir.Model,
    calibration: CalibrationSource,
    options: PtqOptions,
    *,
    spec: QuantSpec,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Progress | None = None,
) -> PtqState:
    """The state the steps start from: a typed, named float copy of `model` (which is not
    modified), the spec with the options' stem choice, and the calibration stream."""
    if is_quantized(model):
        raise PassInputError(
            "the model is already quantized (it holds QuantizeLinear/DequantizeLinear nodes)"
        )
    opset = graph_tools.opset(model)
    if opset < 13:  # InsertQdqPass refuses it too, but only after all the calibration work
        raise PassInputError(
            f"INT8 Q/DQ needs opset 13 or newer, the model has opset {opset}; "
            "upgrade it first (onnx.version_converter.convert_version)"
        )
    work = graph_tools.clone(model)
    graph_tools.ensure_types(work)
    ir.passes.common.NameFixPass()(work)
    unknown = set(options.exclude) - {n.name for n in work.graph}
    if unknown:
        raise PassOptionError(f"cannot keep unknown nodes in float: {', '.join(sorted(unknown))}")
    spec = spec_for(work.graph, spec)
    if options.float_stem is not None and options.float_stem != spec.float_stem:
        spec = spec.replace(float_stem=options.float_stem)
    stem = stem_nodes(work.graph, spec) if spec.float_stem else ()
    stream = CalibrationStream(
        calibration,
        model_inputs(work),
        samples=options.samples,
        batch_size=options.batch_size,
        preprocess=preprocess,
    )
    return PtqState(
        model=work,
        spec=spec,
        options=options,
        stream=stream,
        excluded=frozenset(options.exclude) | frozenset(stem),
        progress=progress,
    )
