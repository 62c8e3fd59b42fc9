"""`--precision auto`: pick the fastest candidate that keeps the accuracy budget.

The decision uses the measured latencies (paired ratios against the FP32
artifact) and accuracies of this run; `discard_rejected` deletes the rejected
artifacts before publishing, after the report has been built from them.
"""

from __future__ import annotations

from typing import Any

from compiler.gates import accuracy_metric
from compiler.stages.lower import Lowered
from compiler.stages.measure import Measured
from targets.latency import LatencyStats, latency_ratio


def select_precision(
    requested: str, lowered: Lowered, measured: Measured, min_accuracy: float | None
) -> tuple[str, dict[str, Any] | None]:
    """(the precision to ship, the report's `auto` section or None when nothing was chosen)."""
    if requested != "auto":
        return requested, None
    candidates = {p: (measured.latencies[p], measured.accuracies[p]) for p in lowered.artifacts}
    return choose_precision(candidates, min_accuracy)


def discard_rejected(lowered: Lowered, precision: str) -> None:
    """Delete the candidates not chosen, once the report has read what it needs of them
    (the baseline's size may be the fp32 candidate's file)."""
    for p, art in lowered.artifacts.items():
        if p != precision:
            art.path.unlink(missing_ok=True)


def choose_precision(
    candidates: dict[str, tuple[LatencyStats, Any]], min_accuracy: float | None
) -> tuple[str, dict[str, Any]]:
    """`--precision auto`: the fastest candidate whose accuracy meets the budget.

    The budget is `--min-accuracy` when given. Without it: label accuracy within
    one point of the FP32 artifact's, top-1 agreement with the FP32 original
    ≥ 0.99, or cosine ≥ 0.999 for outputs that are not class scores. FP32 always
    qualifies, so there is always an answer.
    """
    fp32_value = (
        accuracy_metric(candidates["fp32"][1].to_dict())[1] if "fp32" in candidates else None
    )
    fp32_latency = candidates["fp32"][0] if "fp32" in candidates else None
    rows = []
    for p, (lat, acc) in candidates.items():
        metric, value = accuracy_metric(acc.to_dict())
        if min_accuracy is not None:
            limit = min_accuracy
        elif metric == "top1_accuracy" and fp32_value is not None:
            limit = round(fp32_value - 0.01, 4)
        else:
            limit = 0.999 if metric == "cosine" else 0.99
        meets = p == "fp32" or (value is not None and value >= limit)
        rows.append(
            {
                "precision": p,
                "p50_ms": lat.to_dict()["p50"],
                "latency_vs_fp32": None
                if fp32_latency is None
                else round(latency_ratio(lat, fp32_latency), 4),
                "metric": metric,
                "value": value,
                "limit": limit,
                "meets_budget": meets,
            }
        )
    eligible = [r for r in rows if r["meets_budget"]]
    best = min(eligible, key=lambda r: r["latency_vs_fp32"] or r["p50_ms"])
    return best["precision"], {"chosen": best["precision"], "candidates": rows}
