"""Per-layer sensitivity and automatic float fallback.

`layer_sensitivity` quantizes one layer alone (its activation inputs, its weight,
its bias; every other node stays float and reads float) and measures the
model's output against FP32 on a small calibration subset: SQNR in dB
(10 log10 sum y^2 / sum (y - y_q)^2 over all outputs) and top-1 agreement of
the first output. A low SQNR means the layer hurts when it alone is int8.
A tensor's quantization error is charged to the layers that read it, so keeping
a layer in float also keeps its input float (see `plan`).

`budgeted_fallback` keeps layers in float, one at a time, until the fully
quantized model's SQNR on the subset reaches `min_sqnr_db` (and its agreement
`min_agreement`, if given), or `max_layers` are float, choosing by accuracy gain
per latency cost: a layer's gain is the output noise power it adds when it alone
is int8, relative to the signal (10^(-SQNR/10): noise from independent layers
adds up), its cost what keeping it float adds to the latency (a fraction of
FP32's, `layer_latency.py`). Layers that cost nothing (float as fast as int8)
come first, by gain; the rest by gain / cost. With a `budget` (the latency the
fallback may add, same unit), a layer that would exceed it is skipped and the
next one tried: the result stays within the bound, and says whether the accuracy
budget was met (`Fallback.met`) and, if not, what stopped it (`limited_by`).
Without costs every layer costs 0 and the order is the most sensitive first
(`auto_fallback`, the order before costs were known). Each step costs one run of
the subset; the analysis costs one run per layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.noise import energies, sqnr_db

logger = logging.getLogger(__name__)

Quantizer = Callable[[ir.Model, frozenset[str]], ir.Model]


@dataclass(frozen=True)
class Score:
    sqnr_db: float
    agreement: float

    def meets(self, min_sqnr_db: float | None, min_agreement: float | None) -> bool:
        """Whether this score holds an accuracy budget (None: that part is not asked)."""
        sqnr_ok = min_sqnr_db is None or self.sqnr_db >= min_sqnr_db
        return sqnr_ok and (min_agreement is None or self.agreement >= min_agreement)


def _outputs(
    model: ir.Model, feeds: Sequence[Mapping[str, np.ndarray]], threads: int
) -> list[np.ndarray]:
    session = graph_tools.ort_session(graph_tools.model_bytes(model), threads=threads)
    runs = [session.run(None, dict(f)) for f in feeds]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]


def score(reference: list[np.ndarray], outputs: list[np.ndarray]) -> Score:
    """SQNR over all float outputs and top-1 agreement of the first one."""
    sig = noise = 0.0
    for ref, out in zip(reference, outputs, strict=True):
        if not np.issubdtype(ref.dtype, np.floating):
            continue
        s, n = energies(ref, out)
        sig += s
        noise += n
    sqnr = sqnr_db(sig, noise)
    ref0, out0 = reference[0], outputs[0]
    if ref0.ndim >= 2 and ref0.shape[-1] > 1:
        agreement = float((ref0.argmax(-1) == out0.argmax(-1)).mean())
    else:
        agreement = 1.0
    return Score(sqnr, agreement)


class Evaluator:
    """FP32 reference outputs on a fixed subset; scores any variant of the model."""

    def __init__(
        self, model: ir.Model, batches: Iterable[Mapping[str, np.ndarray]], *, threads: int = 0
    ) -> None:
        self.feeds = [dict(b) for b in batches]
        self.threads = threads
        if not self.feeds:
            raise ValueError("sensitivity analysis needs at least one batch")
        self.reference = _outputs(model, self.feeds, threads)

    def __call__(self, model: ir.Model) -> Score:
        return score(self.reference, _outputs(model, self.feeds, self.threads))


def layer_sensitivity(
    model: ir.Model,
    quantize: Quantizer,
    layers: list[str],
    evaluator: Evaluator,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Score]:
    """{layer: score of the model with only that layer quantized}.

    `quantize(model, exclude)` returns the Q/DQ model with the nodes in `exclude` float.
    """
    everything = frozenset(layers)
    out: dict[str, Score] = {}
    for i, name in enumerate(layers):
        out[name] = evaluator(quantize(model, everything - {name}))
        if progress is not None:
            progress(i + 1, len(layers))
    return out


def gain(s: Score) -> float:
    """The output noise power a layer adds alone, relative to the signal (10^(-SQNR/10))."""
    return 0.0 if not math.isfinite(s.sqnr_db) else float(10 ** (-s.sqnr_db / 10))


@dataclass(frozen=True)
class Trade:
    """One candidate layer's accuracy gain and latency cost if kept in float."""

    layer: str
    sqnr_db: float  # the model's SQNR with this layer alone int8
    gain: float  # `gain`: the noise it adds alone, relative to the signal
    cost: float | None  # latency it adds in float, a fraction of FP32's (None: not measured)
    kept_float: bool


@dataclass(frozen=True)
class Fallback:
    """What `budgeted_fallback` chose: the layers kept float, in the order taken, the
    final score, whether the budget holds, and every candidate's trade (in the order
    tried)."""

    kept: list[str]
    score: Score
    met: bool
    limited_by: str | None  # "latency", "max_layers", "layers" (none left); None when met
    spent: float  # the latency the kept layers add (sum of their positive costs)
    budget: float | None
    trades: list[Trade] = field(default_factory=list)


def fallback_order(
    sensitivity: Mapping[str, Score], costs: Mapping[str, float] | None = None
) -> list[str]:
    """Candidates in the order the fallback tries them: free layers (cost <= 0) by gain,
    then the rest by gain per cost; ties by name."""
    costs = costs or {}

    def key(name: str) -> tuple[int, float, str]:
        g, c = gain(sensitivity[name]), costs.get(name, 0.0)
        return (0, -g, name) if c <= 0 else (1, -g / c, name)

    return sorted(sensitivity, key=key)


def budgeted_fallback(
    model: ir.Model,
    quantize: Quantizer,
    sensitivity: Mapping[str, Score],
    evaluator: Evaluator,
    *,
    min_sqnr_db: float,
    min_agreement: float | None = None,
    max_layers: int | None = None,
    costs: Mapping[str, float] | None = None,
    budget: float | None = None,
    exclude: frozenset[str] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
) -> Fallback:
    """Keep layers float by gain per latency cost until the accuracy budget holds, never
    adding more than `budget` of latency (None: no bound); see the module docstring.
    `progress(layers tried, layers)` after each evaluation, and with done == total at the end."""
    costs = costs or {}
    order = fallback_order(sensitivity, costs)
    kept: list[str] = []
    spent = 0.0
    over_budget = False

    current = evaluator(quantize(model, exclude))
    limited: str | None = None
    for i, name in enumerate(order):
        if current.meets(min_sqnr_db, min_agreement):
            break
        if max_layers is not None and len(kept) >= max_layers:
            limited = "max_layers"
            break
        cost = max(costs.get(name, 0.0), 0.0)
        if gain(sensitivity[name]) <= 0:
            continue  # exact in int8: nothing to gain
        if budget is not None and spent + cost > budget:
            over_budget = True
            continue
        kept.append(name)
        spent += cost
        current = evaluator(quantize(model, exclude | frozenset(kept)))
        if progress is not None:
            progress(i + 1, len(order))
        logger.info(
            "fallback: %s kept float (cost %.4f) -> SQNR %.2f dB, agreement %.3f",
            name,
            cost,
            current.sqnr_db,
            current.agreement,
        )
    met = current.meets(min_sqnr_db, min_agreement)
    if not met and limited is None:
        limited = "latency" if over_budget else "layers"
    if not met:
        logger.warning(
            "auto fallback stopped (%s) with %d layers in float at SQNR %.2f dB, "
            "agreement %.3f (budget %.2f dB, agreement %s)",
            limited,
            len(kept),
            current.sqnr_db,
            current.agreement,
            min_sqnr_db,
            min_agreement,
        )
    if progress is not None:
        progress(len(order), len(order))
    chosen = set(kept)
    trades = [
        Trade(
            n,
            sensitivity[n].sqnr_db,
            gain(sensitivity[n]),
            costs[n] if n in costs else None,
            n in chosen,
        )
        for n in order
    ]
    return Fallback(kept, current, met, None if met else limited, spent, budget, trades)


def auto_fallback(
    model: ir.Model,
    quantize: Quantizer,
    sensitivity: Mapping[str, Score],
    evaluator: Evaluator,
    *,
    min_sqnr_db: float,
    min_agreement: float | None = None,
    max_layers: int | None = None,
    exclude: frozenset[str] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], Score]:
    """Keep the most sensitive layers float until the budget holds, with no latency cost
    known (`budgeted_fallback` without costs); (layers kept float, final score)."""
    result = budgeted_fallback(
        model,
        quantize,
        sensitivity,
        evaluator,
        min_sqnr_db=min_sqnr_db,
        min_agreement=min_agreement,
        max_layers=max_layers,
        exclude=exclude,
        progress=progress,
    )
    return result.kept, result.score
