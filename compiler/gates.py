"""Budgets judged against a report: the exit code CI pipelines gate on.

`--min-accuracy` judges the most meaningful accuracy the run has: label top-1
accuracy when the evaluation set has labels, else top-1 agreement with the FP32
original, else (non-classification outputs) mean cosine similarity.
Sizes are in MB = 10**6 bytes; latency is the p50 at the report's batch size.
"""

from __future__ import annotations

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

    def verdict(self) -> str:
        """One line a person reads in a CI log."""
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        op = ">=" if self.name == "min_accuracy" else "<="
        status = "passed" if self.passed else "FAILED"
        return f"gate {self.name} {status}: {self.metric} = {shown} (budget {op} {self.limit:g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_metric(accuracy: dict[str, Any] | None) -> tuple[str, float | None]:
    """Which accuracy number `--min-accuracy` judges, and its value."""
    if not accuracy:
        return "accuracy", None
    for key in ("top1_accuracy", "top1_agreement", "cosine"):
        if accuracy.get(key) is not None:
            return key, float(accuracy[key])
    return "accuracy", None


def judge(report: dict[str, Any], budgets: Budgets) -> list[GateResult]:
    """Evaluate every budget that is set; a missing measurement fails its gate."""
    results = []
    if budgets.max_size_mb is not None:
        artifact = report.get("artifact") or {}
        # Unstructured sparsity only pays off compressed: judge what a download sees.
        compressed = (report.get("pruning") or {}).get("mode") == "unstructured"
        size = artifact.get("compressed_size_bytes" if compressed else "size_bytes")
        value = None if size is None else size / 1e6
        results.append(
            GateResult(
                "max_size_mb",
                budgets.max_size_mb,
                value,
                value is not None and value <= budgets.max_size_mb,
                "compressed artifact size (MB)" if compressed else "artifact size (MB)",
            )
        )
    if budgets.max_latency_ms is not None:
        value = (report.get("latency_ms") or {}).get("p50")
        results.append(
            GateResult(
                "max_latency_ms",
                budgets.max_latency_ms,
                value,
                value is not None and value <= budgets.max_latency_ms,
                "p50 latency (ms)",
            )
        )
    if budgets.min_accuracy is not None:
        metric, value = accuracy_metric(report.get("accuracy"))
        results.append(
            GateResult(
                "min_accuracy",
                budgets.min_accuracy,
                value,
                value is not None and value >= budgets.min_accuracy,
                metric,
            )
        )
    return results


def junit_xml(results: list[GateResult], *, suite: str) -> str:
    """A JUnit XML document with one test case per gate (CI systems render these)."""
    failures = sum(not r.passed for r in results)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuite name={quoteattr(suite)} tests="{len(results)}" failures="{failures}" errors="0">',
    ]
    for r in results:
        lines.append(f"  <testcase classname={quoteattr(suite)} name={quoteattr(r.name)}>")
        if not r.passed:
            lines.append(
                f"    <failure message={quoteattr(r.verdict())}>{escape(r.verdict())}</failure>"
            )
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"
