"""Budgets judged against a report: the exit code CI pipelines gate on.

`--min-accuracy` judges the most meaningful accuracy the run has: label top-1
accuracy when the evaluation set has labels, else top-1 agreement with the FP32
original, else (non-classification outputs) mean cosine similarity.
Sizes are in MB = 10**6 bytes; latency is the p50 at the report's batch size.

A gate on top-1 agreement or label accuracy also says how firm its verdict is:
`margin_db`, the SQNR it can lose (the noise keeping its shape) before it fails, or,
negative, the SQNR it has to gain to pass. It is read from the report's per-sample
flip points (`accuracy.top1_flip_db` and `top1_clear_db`, or
`top1_accuracy_events_db`; `compiler/evaluate.py`); None for other gates, for
reports without them, and when the change lies past the flips the report keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from compiler.config import Budgets


@dataclass(frozen=True)
class GateResult:
    name: str
    limit: float
    value: float | None
    passed: bool
    metric: str
    margin_db: float | None = None

    def verdict(self) -> str:
        """One line a person reads in a CI log."""
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        op = ">=" if self.name.startswith("min_") else "<="
        status = "passed" if self.passed else "FAILED"
        budget = f"budget {op} {self.limit:g}"
        if self.margin_db is not None:
            budget += f"; {margin_words(self.margin_db)}"
        return f"gate {self.name} {status}: {self.metric} = {shown} ({budget})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def margin_words(margin_db: float) -> str:
    """A gate's `margin_db` as a person reads it."""
    if margin_db >= 0:
        return f"fails {margin_db:.3g} dB of SQNR lower"
    return f"passes {-margin_db:.3g} dB of SQNR higher"


def accuracy_metric(accuracy: dict[str, Any] | None) -> tuple[str, float | None]:
    """Which accuracy number `--min-accuracy` judges, and its value."""
    if not accuracy:
        return "accuracy", None
    for key in ("top1_accuracy", "top1_agreement", "cosine"):
        if accuracy.get(key) is not None:
            return key, float(accuracy[key])
    return "accuracy", None


def _size(report: dict[str, Any], compressed: bool) -> float | None:
    artifact = report.get("artifact") or {}
    size = artifact.get("compressed_size_bytes" if compressed else "size_bytes")
    return None if size is None else size / 1e6


def _accuracy_drop(report: dict[str, Any]) -> tuple[str, float | None]:
    """FP32's accuracy minus the artifact's: labels when there are, else against 1.0 (the
    FP32 original agrees with itself)."""
    accuracy = report.get("accuracy") or {}
    if (
        accuracy.get("top1_accuracy") is not None
        and accuracy.get("baseline_top1_accuracy") is not None
    ):
        drop = float(accuracy["baseline_top1_accuracy"]) - float(accuracy["top1_accuracy"])
        return "top-1 accuracy drop vs FP32", drop
    metric, value = accuracy_metric(accuracy)
    return f"1 - {metric}", None if value is None else 1.0 - value


def _measure(report: dict[str, Any], name: str) -> tuple[str, float | None]:
    """(metric label, value) a budget judges."""
    if name == "max_size_mb":
        # Unstructured sparsity only pays off compressed: judge what a download sees.
        compressed = (report.get("pruning") or {}).get("mode") == "unstructured"
        label = "compressed artifact size (MB)" if compressed else "artifact size (MB)"
        return label, _size(report, compressed)
    if name == "max_compressed_size_mb":
        return "compressed artifact size (MB)", _size(report, True)
    if name == "max_latency_ms":
        return "p50 latency (ms)", (report.get("latency_ms") or {}).get("p50")
    if name == "max_p99_latency_ms":
        return "p99 latency (ms)", (report.get("latency_ms") or {}).get("p99")
    if name == "min_speedup":
        return "speedup over FP32", (report.get("baseline") or {}).get("speedup")
    if name == "min_accuracy":
        return accuracy_metric(report.get("accuracy"))
    if name == "min_sqnr_db":
        return "sqnr_db", (report.get("accuracy") or {}).get("sqnr_db")
    if name == "max_memory_mb":
        return "peak memory (MB)", (report.get("memory") or {}).get("peak_rss_mb")
    return _accuracy_drop(report)


def judge(report: dict[str, Any], budgets: Budgets) -> list[GateResult]:
    """Evaluate every budget that is set; a missing measurement fails its gate."""
    results = []
    for name, limit in asdict(budgets).items():
        if limit is None:
            continue
        metric, value = _measure(report, name)
        ok = value is not None and (value >= limit if name.startswith("min_") else value <= limit)
        margin = None
        if name == "min_accuracy" and value is not None:
            margin = _top1_margin(report.get("accuracy") or {}, metric, value, limit, ok)
        elif name == "min_sqnr_db" and value is not None:
            margin = round(float(value) - limit, 4)  # an SQNR gate's margin is its own
        results.append(GateResult(name, limit, value, ok, metric, margin))
    return results


def _top1_margin(
    accuracy: dict[str, Any], metric: str, value: float, limit: float, passing: bool
) -> float | None:
    """`margin_db` of a `--min-accuracy` gate on a top-1 metric: walking the flip points
    away from the candidate's SQNR, the first at which the count of good samples crosses
    the ceil(limit x samples) the gate needs (dB lower when it passes, negative: dB
    higher when it fails)."""
    n = accuracy.get("samples")
    if not n:
        return None
    if metric == "top1_agreement":
        lower_db, higher_db = accuracy.get("top1_flip_db"), accuracy.get("top1_clear_db")
        lower = None if lower_db is None else [(d, -1) for d in lower_db]
        higher = None if higher_db is None else [(d, +1) for d in higher_db]
    elif metric == "top1_accuracy":
        events = accuracy.get("top1_accuracy_events_db") or {}
        lower, higher = events.get("lower"), events.get("higher")
    else:
        return None
    needed = math.ceil(limit * n - 1e-9)
    count = round(value * n)
    if passing != (count >= needed):  # a value the sample count does not give
        return None
    steps = lower if passing else higher
    for db, change in steps or ():
        count += change
        if (count < needed) if passing else (count >= needed):
            return float(db) if passing else -float(db)
    return None


#: the first line of every JUnit document edgec writes
XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>'


def junit_xml(results: Sequence[GateResult], *, suite: str) -> str:
    """A JUnit XML document with one test case per gate (CI systems render these)."""
    return "\n".join([XML_HEADER, *testsuite_lines(results, suite=suite)]) + "\n"


def testsuite_lines(results: Sequence[GateResult], *, suite: str, indent: str = "") -> list[str]:
    """One JUnit `<testsuite>` element, a test case per gate, each line after `indent`."""
    failures = sum(not r.passed for r in results)
    lines = [
        f'<testsuite name={quoteattr(suite)} tests="{len(results)}" failures="{failures}" errors="0">'
    ]
    for r in results:
        lines.append(f"  <testcase classname={quoteattr(suite)} name={quoteattr(r.name)}>")
        if not r.passed:
            lines.append(
                f"    <failure message={quoteattr(r.verdict())}>{escape(r.verdict())}</failure>"
            )
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return [indent + line for line in lines]
