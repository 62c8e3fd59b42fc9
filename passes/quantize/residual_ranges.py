"""The residual stream's ranges, chosen per model by the output error they cause.

A residual-stream tensor is the output of an Add (or Sum) of two computed tensors —
the merge of a block's branch into its skip path — that Q/DQ quantizes (the next
block's Conv reads its quantized copy). The range search leaves these at their
calibrated (percentile) ranges: an error there is carried on unchanged into every
later block, so judging it only at its readers misleads (`range_search.py`). Whether
clipping the stream's rare large values costs more than the coarser steps of its
full range depends on the model: giving these tensors their observed min/max took
EfficientNet-B0 (random init, 9 such Adds) from cosine 0.971 to 0.982, and cost
MobileNetV2 (real weights, 10 such Adds) 0.2 dB of logit SQNR.

So the choice is made per model, by the error it causes where it matters:
`choose_residual_ranges` builds the Q/DQ model both ways (the calibrated ranges, and
observed min/max on the residual-stream tensors, everything else equal) and keeps the
one whose first graph output has the higher SQNR against FP32 (a tie keeps the
calibrated ranges). Judged on *calibration* data only (never the evaluation set) and
out of sample: the two candidate ranges are fitted on the first half of the trial's
samples (`FitHistograms`, filled by the calibration pass) and judged on the second
half, because a percentile judged on the samples it was cut from hardly ever clips. The
variants run in onnxruntime's optimized int8 kernels (the deployed arithmetic): on an
AVX2 CPU without VNNI their uint8 x int8 products saturate, and EfficientNet-B0 measured
22.4 dB (percentile) against 22.0 dB (min/max) in exact Q/DQ arithmetic but 13.0 against
15.1 dB in those kernels, the order the deployed artifact shows. The winner is applied
with the whole calibration set's statistics.

Then each residual *group* — a chain of residual Adds with the tensors they merge (the
branches' outputs and the stream's first tensor), `residual_groups` — has its ranges
shrunk together by the factor (`SHRINK_GRID`, 1 to 0.25) that gives the first output
the highest SQNR on the same held-out samples, one group after another from the last
(`shrink_groups`; a shrink must win by `SHRINK_MIN_GAIN_DB`). A percentile fitted to
the stream's heavy tail can be far wider than what the output needs: in MobileNetV2's
last stage (160 channels at 7x7, blocks 14-16) the five stream tensors held half the
quantization noise, and cutting their ranges to 0.35x took held-out logit SQNR from
21.7 to 23.6 dB, while the four earlier groups lose 1-7 dB at 0.5x and keep theirs.
Shrinking one tensor of the group alone bought at most 0.55 dB: the group moves
together. Bias correction, which runs after, removes the mean the clipping shifts.

A model without residual-stream tensors, or calibrated by min/max already, has nothing
to try: no build, no run, and its ranges (hence its artifact) are exactly what they
were without this step.

Cost: one float and two Q/DQ runs over 16 samples (of `range_samples`, at most 32),
then 2 to 4 Q/DQ runs per residual group (12 on MobileNetV2: about 4 s on 2 cores).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.calibrate import Histogram
from passes.quantize.noise import energies, sqnr_db
from passes.quantize.plan import QuantPlan

logger = logging.getLogger(__name__)

Range = tuple[float, float]


@dataclass(frozen=True)
class ResidualChoice:
    """What `choose_residual_ranges` decided (`record` is report.json's form)."""

    choice: str | None  # the calibration method's name or "minmax"; None: no trial
    tensors: list[str]
    sqnr_db: dict[str, float] | None = None  # first-output SQNR of each variant
    samples: int = 0  # held-out samples judged on
    fit_samples: int = 0  # samples the trial's ranges were fitted on
    reason: str | None = None  # why there was no trial
    groups: tuple[GroupShrink, ...] = ()  # each residual group's shrink trial

    def record(self) -> dict[str, object]:
        return {
            "groups": [g.record() for g in self.groups],
            "choice": self.choice,
            "tensors": len(self.tensors),
            "sqnr_db": None
            if self.sqnr_db is None
            else {k: (round(v, 3) if math.isfinite(v) else None) for k, v in self.sqnr_db.items()},
            "samples": self.samples,
            "fit_samples": self.fit_samples,
            "reason": self.reason,
        }


def residual_stream(plan: QuantPlan) -> list[str]:
    """The quantized tensors written by an Add/Sum of two or more computed tensors
    (the residual stream's quantized copies), in graph order; not those that share
    another tensor's range or must cover a graph output anyway."""
    out = []
    for name, site in plan.activations.items():
        if name in plan.share or name in plan.covering:
            continue
        producer = site.value.producer()
        if producer is None or not graph_tools.is_std(producer, "Add", "Sum"):
            continue
        inputs = [v for v in producer.inputs if v is not None]
        if len(inputs) >= 2 and all(graph_tools.constant(v) is None for v in inputs):
            out.append(name)
    return out


def residual_groups(plan: QuantPlan) -> list[list[str]]:
    """The residual stream cut into its streams: each residual Add's quantized output
    joined with its quantized computed inputs (the block's branch and the skip path,
    the stream's previous copy), one group per chain of such Adds, in graph order.
    Excludes tensors that share another's range or must cover a graph output."""

    def free(name: str) -> bool:
        return name in plan.activations and name not in plan.share and name not in plan.covering

    def joined() -> Iterator[list[str]]:
        for name in residual_stream(plan):
            producer = plan.activations[name].value.producer()
            assert producer is not None
            inputs = [v.name for v in producer.inputs if v is not None and v.name]
            yield [name, *(n for n in inputs if free(n))]

    return graph_tools.components(joined())


#: Factors a residual group's ranges may be shrunk by (both ends, about zero), in order;
#: the trial starts at `SHRINK_START` and walks to the best one's untried neighbours.
SHRINK_GRID = (1.0, 0.7, 0.5, 0.35, 0.25)
SHRINK_START = 0.5
#: A shrink is kept only when it beats the group's current ranges by this much.
SHRINK_MIN_GAIN_DB = 0.1


def scaled(ranges: Mapping[str, Range], names: Iterable[str], factor: float) -> dict[str, Range]:
    """`ranges` with each of `names` multiplied by `factor` (its zero stays inside)."""
    out = dict(ranges)
    for name in names:
        if name in out:
            lo, hi = out[name]
            out[name] = (lo * factor, hi * factor)
    return out


@dataclass(frozen=True)
class GroupShrink:
    """One residual group's trial: its tensors, the SQNR of each factor tried, the winner."""

    tensors: list[str]
    sqnr_db: dict[float, float]
    factor: float

    def record(self) -> dict[str, object]:
        return {
            "tensors": len(self.tensors),
            "first": self.tensors[0],
            "factor": self.factor,
            "sqnr_db": {
                str(f): (round(v, 3) if math.isfinite(v) else None) for f, v in self.sqnr_db.items()
            },
        }


def shrink_groups(
    groups: list[list[str]],
    ranges: Mapping[str, Range],
    score: Callable[[Mapping[str, Range]], float],
    *,
    baseline: float,
) -> list[GroupShrink]:
    """Per residual group, the factor of `SHRINK_GRID` its ranges are shrunk by, chosen
    one group after another (the last first: its error reaches the output most directly)
    by `score(ranges)`, the first-output SQNR; `baseline` is the score of `ranges`.
    Each group's search assumes one peak: it scores `SHRINK_START`, then the untried
    neighbours of the best factor so far until the best has none (2 to 4 scores a group).
    Returns the trial of each group, in `groups`' order."""
    current = dict(ranges)
    best = baseline
    trials: list[GroupShrink] = []
    for group in reversed(groups):
        tried: dict[float, float] = {
            1.0: best,
            SHRINK_START: score(scaled(current, group, SHRINK_START)),
        }
        while True:
            won = _best_factor(tried)
            i = SHRINK_GRID.index(won)
            todo = [SHRINK_GRID[j] for j in (i - 1, i + 1) if 0 <= j < len(SHRINK_GRID)]
            todo = [f for f in todo if f not in tried]
            if not todo:
                break
            for f in todo:
                tried[f] = score(scaled(current, group, f))
        if won != 1.0:
            current = scaled(current, group, won)
            best = tried[won]
        trials.append(GroupShrink(group, dict(sorted(tried.items(), reverse=True)), won))
    trials.reverse()
    return trials


def _best_factor(tried: Mapping[float, float]) -> float:
    """The factor with the highest score, a shrink counting `SHRINK_MIN_GAIN_DB` less
    (a tie keeps the larger factor)."""
    return max(tried, key=lambda f: (tried[f] - (0.0 if f == 1.0 else SHRINK_MIN_GAIN_DB), f))


def minmax_ranges(
    ranges: Mapping[str, Range],
    stats: Mapping[str, Histogram],
    names: Iterable[str],
    *,
    symmetric: bool,
) -> dict[str, Range]:
    """`ranges` with each of `names` widened to every finite value calibration saw."""
    out = dict(ranges)
    for name in names:
        if name in out and name in stats:
            out[name] = stats[name].cover(out[name], symmetric=symmetric)
    return out


def first_output_sqnr(reference: np.ndarray, output: np.ndarray) -> float:
    """10 log10(sum y^2 / sum (y - y_q)^2) of one output (inf when exact)."""
    return sqnr_db(*energies(reference, output))


def _first_output(
    model: ir.Model, feeds: list[dict[str, np.ndarray]], threads: int, *, optimize: bool = False
) -> np.ndarray:
    session = graph_tools.ort_session(
        graph_tools.model_bytes(model), threads=threads, optimize=optimize
    )
    name = session.get_outputs()[0].name
    return np.concatenate([session.run([name], f)[0] for f in feeds])


class FitHistograms:
    """Histograms of the residual-stream tensors over the first `samples` calibration
    samples only (a batch that crosses the limit is cut), filled by the calibration pass:
    the trial fits its ranges on these and judges them on the samples after."""

    def __init__(self, names: Iterable[str], samples: int) -> None:
        self.samples = samples
        self.stats = {n: Histogram() for n in names}
        self._seen = dict.fromkeys(self.stats, 0)

    def visit(self, name: str, array: np.ndarray) -> None:
        left = self.samples - self._seen[name]
        if left > 0:
            self.stats[name].update(array[:left])
            self._seen[name] += min(left, array.shape[0])


def skip(batches: Iterable[Mapping[str, np.ndarray]], n: int) -> Iterator[dict[str, np.ndarray]]:
    """`batches` without their first `n` samples."""
    for b in batches:
        size = next(iter(b.values())).shape[0]
        if n >= size:
            n -= size
            continue
        yield {k: np.asarray(v)[n:] for k, v in b.items()}
        n = 0


def choose_residual_ranges(
    model: ir.Model,
    names: list[str],
    ranges: Mapping[str, Range],
    stats: Mapping[str, Histogram],
    fit: FitHistograms | None,
    build: Callable[[Mapping[str, Range]], ir.Model],
    held_out: Iterable[Mapping[str, np.ndarray]],
    *,
    fitted: Callable[[Histogram], Range],
    symmetric: bool,
    method: str,
    groups: list[list[str]] | None = None,
    threads: int = 0,
) -> tuple[dict[str, Range], ResidualChoice]:
    """The better of `ranges` and the same with the residual stream (`names`) at its
    observed min/max (see the module docstring). The two are judged with the stream's
    ranges fitted on `fit` (the first calibration samples; `fitted(h)` is the calibration
    method's range of a histogram) and every other range as calibrated, on `held_out`
    (the calibration samples after those); `build(r)` is the Q/DQ copy of the float
    `model` with ranges `r`. The winner is applied with the whole calibration set's
    statistics (`stats`)."""
    if not names:
        return dict(ranges), ResidualChoice(None, [], reason="no residual-stream Adds")
    if method == "minmax":
        return dict(ranges), ResidualChoice(None, names, reason="calibrated by min/max already")
    if fit is None or any(not fit.stats[n].count for n in names):
        return dict(ranges), ResidualChoice(None, names, reason="too few calibration samples")
    feeds = [dict(b) for b in held_out]
    if not feeds:
        return dict(ranges), ResidualChoice(None, names, reason="too few calibration samples")
    tight = dict(ranges) | {n: fitted(fit.stats[n]) for n in names}
    wide = dict(ranges) | {n: fit.stats[n].cover(tight[n], symmetric=symmetric) for n in names}
    reference = _first_output(model, feeds, threads)
    sqnr = {
        method: first_output_sqnr(
            reference, _first_output(build(tight), feeds, threads, optimize=True)
        ),
        "minmax": first_output_sqnr(
            reference, _first_output(build(wide), feeds, threads, optimize=True)
        ),
    }
    choice = "minmax" if sqnr["minmax"] > sqnr[method] else method
    logger.info(
        "residual stream (%d tensors): %s %.2f dB, minmax %.2f dB on %d held-out samples: %s",
        len(names),
        method,
        sqnr[method],
        sqnr["minmax"],
        len(reference),
        choice,
    )
    chosen = (
        minmax_ranges(ranges, stats, names, symmetric=symmetric)
        if choice == "minmax"
        else dict(ranges)
    )
    trials = shrink_groups(
        groups or [],
        wide if choice == "minmax" else tight,
        lambda r: first_output_sqnr(
            reference, _first_output(build(r), feeds, threads, optimize=True)
        ),
        baseline=sqnr[choice],
    )
    for trial in trials:
        chosen = scaled(chosen, trial.tensors, trial.factor)
    return chosen, ResidualChoice(
        choice, names, sqnr, len(reference), fit.samples, groups=tuple(trials)
    )
