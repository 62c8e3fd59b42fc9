from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from compiler.config import Budgets
from compiler.gates import judge, junit_xml
from compiler.ground.errors import UsageError

REPORT = {
    "artifact": {"size_bytes": 3_500_000},
    "latency_ms": {"p50": 4.0},
    "accuracy": {"top1_agreement": 0.98, "top1_accuracy": None, "cosine": 0.999},
}


def test_each_budget_judged_on_its_metric() -> None:
    results = judge(REPORT, Budgets(max_size_mb=3.0, max_latency_ms=5.0, min_accuracy=0.99))
    by_name = {r.name: r for r in results}
    assert by_name["max_size_mb"].value == pytest.approx(3.5) and not by_name["max_size_mb"].passed
    assert by_name["max_latency_ms"].passed
    assert by_name["min_accuracy"].metric == "top1_agreement" and not by_name["min_accuracy"].passed
    assert "FAILED" in by_name["max_size_mb"].verdict()


def test_label_accuracy_preferred_and_missing_measurement_fails() -> None:
    report = {**REPORT, "accuracy": {"top1_agreement": 1.0, "top1_accuracy": 0.5}}
    (r,) = judge(report, Budgets(min_accuracy=0.9))
    assert r.metric == "top1_accuracy" and not r.passed
    (r,) = judge({"latency_ms": None}, Budgets(max_latency_ms=1.0))
    assert r.value is None and not r.passed


def test_no_budgets_no_gates() -> None:
    assert judge(REPORT, Budgets()) == []


def test_bad_budget_values_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Budgets(min_accuracy=95)
    with pytest.raises(UsageError):
        Budgets(max_size_mb=-1)


def test_junit_counts_failures() -> None:
    results = judge(REPORT, Budgets(max_size_mb=3.0, max_latency_ms=5.0))
    root = ET.fromstring(junit_xml(results, suite="edgec.test"))
    assert root.attrib["tests"] == "2" and root.attrib["failures"] == "1"
    assert len(root.findall("testcase/failure")) == 1


def test_an_agreement_gate_says_how_much_sqnr_it_can_lose() -> None:
    # 9 of 10 agree; the next agreeing samples flip 0.5, 1.2 and 3.0 dB of SQNR lower
    report = {"accuracy": {"samples": 10, "top1_agreement": 0.9, "top1_flip_db": [0.5, 1.2, 3.0]}}

    def margin(limit: float) -> float | None:
        (r,) = judge(report, Budgets(min_accuracy=limit))
        return r.margin_db

    assert margin(0.9) == 0.5  # no flip to spare: the next one fails it
    assert margin(0.8) == 1.2  # one to spare
    assert margin(0.7) == 3.0
    assert margin(0.5) is None  # four to spare, three known
    assert margin(0.95) is None  # failing
    (r,) = judge(report, Budgets(min_accuracy=0.8))
    assert "fails 1.2 dB of SQNR lower" in r.verdict()
    labels = {"accuracy": {**report["accuracy"], "top1_accuracy": 0.9}}
    (r,) = judge(labels, Budgets(min_accuracy=0.8))
    assert r.metric == "top1_accuracy" and r.margin_db is None
