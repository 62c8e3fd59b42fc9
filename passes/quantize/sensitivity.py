"""Per-layer sensitivity and automatic float fallback.

`layer_sensitivity` quantizes one layer alone (its activation inputs, its weight,
its bias; every other node stays float and reads float) and measures the
model's output against FP32 on a small calibration subset: SQNR in dB
(10 log10 sum y^2 / sum (y - y_q)^2 over all outputs) and top-1 agreement of
the first output. A low SQNR means the layer hurts when it alone is int8.
A tensor's quantization error is charged to the layers that read it, so keeping
a layer in float also keeps its input float (see `plan`).

`auto_fallback` keeps the most sensitive layers in float, one at a time in
order of sensitivity, until the fully quantized model's SQNR on the subset
reaches `min_sqnr_db` (and its agreement `min_agreement`, if given), or
`max_layers` are float. It returns the layers kept float, most sensitive first.
Each step costs one run of the subset; the analysis costs one run per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)

Quantizer = Callable[[ir.Model, frozenset[str]], ir.Model]


@dataclass(frozen=True)
class Score:
    sqnr_db: float
    agreement: float


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
        r = ref.astype(np.float64)
        sig += float((r**2).sum())
        noise += float(((r - out.astype(np.float64)) ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(sig, 1e-30) / noise)
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
    """Keep the most sensitive layers float until the budget holds; (layers kept float, final score).
    `progress(layers tried, layers)` after each evaluation, and with done == total at the end."""
    order = sorted(sensitivity, key=lambda n: (sensitivity[n].sqnr_db, n))
    kept: list[str] = []

    def ok(s: Score) -> bool:
        return s.sqnr_db >= min_sqnr_db and (min_agreement is None or s.agreement >= min_agreement)

    current = evaluator(quantize(model, exclude))
    for name in order:
        if ok(current) or (max_layers is not None and len(kept) >= max_layers):
            break
        kept.append(name)
        current = evaluator(quantize(model, exclude | frozenset(kept)))
        if progress is not None:
            progress(len(kept), len(order))
        logger.info(
            "fallback: %s kept float -> SQNR %.2f dB, agreement %.3f",
            name,
            current.sqnr_db,
            current.agreement,
        )
    if not ok(current):
        logger.warning(
            "auto fallback stopped with %d layers in float at SQNR %.2f dB (budget %.2f dB)",
            len(kept),
            current.sqnr_db,
            min_sqnr_db,
        )
    if progress is not None:
        progress(len(order), len(order))
    return kept, current
