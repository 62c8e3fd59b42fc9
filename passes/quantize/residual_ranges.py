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

A model without residual-stream tensors, or calibrated by min/max already, has nothing
to try: no build, no run, and its ranges (hence its artifact) are exactly what they
were without this step.

Cost: one float and two Q/DQ runs over 16 samples (of `range_samples`, at most 32).
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

    def record(self) -> dict[str, object]:
        return {
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
    return chosen, ResidualChoice(choice, names, sqnr, len(reference), fit.samples)
