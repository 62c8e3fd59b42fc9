from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from compiler.config import Budgets
from compiler.evaluate import compare_outputs
from compiler.gate_report import Judged, table_rows
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
    assert margin(0.95) is None  # failing, and the report has no clear points
    (r,) = judge(report, Budgets(min_accuracy=0.8))
    assert "fails 1.2 dB of SQNR lower" in r.verdict()
    labels = {"accuracy": {**report["accuracy"], "top1_accuracy": 0.9}}
    (r,) = judge(labels, Budgets(min_accuracy=0.8))
    assert r.metric == "top1_accuracy" and r.margin_db is None  # no label events


def test_a_failing_agreement_gate_says_how_much_sqnr_it_needs() -> None:
    # 7 of 10 agree; the flipped three agree again 0.4, 2.0 and 5.0 dB of SQNR higher
    report = {
        "accuracy": {
            "samples": 10, "top1_agreement": 0.7, "top1_flip_db": [1.0], "top1_clear_db": [0.4, 2.0, 5.0]
        }
    }  # fmt: skip

    def margin(limit: float) -> float | None:
        (r,) = judge(report, Budgets(min_accuracy=limit))
        return r.margin_db

    assert margin(0.8) == -0.4 and margin(0.9) == -2.0 and margin(1.0) == -5.0
    assert margin(0.7) == 1.0  # passing: the next flip fails it
    (r,) = judge(report, Budgets(min_accuracy=0.9))
    assert not r.passed and "passes 2 dB of SQNR higher" in r.verdict()
    # `edgec gate`'s table says it too
    judged = Judged(Path("report.json"), "m", "int8", "cpu", (r,))
    assert table_rows([judged])[0][-1] == "FAILED (passes 2 dB of SQNR higher)"


def test_a_label_accuracy_gate_walks_samples_going_both_ways() -> None:
    # 8 of 10 right; with more noise one goes wrong at 1 dB, one goes right at 2 dB, two
    # go wrong at 3 and 4 dB; with less noise one goes right at 0.5 dB (FP32 got it
    # right), one wrong at 1.5 (the noise had moved it onto its label), one right at 6
    events = {"lower": [[1.0, -1], [2.0, 1], [3.0, -1], [4.0, -1]],
              "higher": [[0.5, 1], [1.5, -1], [6.0, 1]]}  # fmt: skip
    report = {"accuracy": {"samples": 10, "top1_accuracy": 0.8, "top1_accuracy_events_db": events}}

    def margin(limit: float) -> float | None:
        (r,) = judge(report, Budgets(min_accuracy=limit))
        assert r.metric == "top1_accuracy"
        return r.margin_db

    assert margin(0.8) == 1.0
    assert margin(0.7) == 4.0  # 7 at 1 dB, 8 at 2 dB, 7 at 3 dB, 6 at 4 dB
    assert margin(0.5) is None  # past the events kept
    assert margin(0.9) == -0.5
    assert margin(1.0) is None  # 9, 8, 9: never 10 within the events kept


def test_gate_margins_from_a_real_comparison_hold_when_the_noise_is_scaled() -> None:
    rng = np.random.default_rng(11)
    ref = rng.standard_normal((200, 8))
    cand = ref + rng.normal(scale=0.6, size=ref.shape)
    labels = np.where(rng.random(200) < 0.8, ref.argmax(1), rng.integers(0, 8, size=200))
    for given in (None, labels):
        acc = compare_outputs(ref, cand, given).to_dict()
        truth = ref.argmax(1) if given is None else given
        value = acc["top1_agreement"] if given is None else acc["top1_accuracy"]
        for limit in (value - 0.05, value + 0.05):
            (r,) = judge({"accuracy": acc}, Budgets(min_accuracy=round(limit, 3)))
            assert r.margin_db is not None
            needed = math.ceil(round(limit, 3) * 200 - 1e-9)

            def passes(db: float, truth: np.ndarray = truth, needed: int = needed) -> bool:
                k = 10 ** (db / 20)
                return int(((ref + k * (cand - ref)).argmax(1) == truth).sum()) >= needed

            # the verdict changes at the margin, not before (a margin < 0 is SQNR higher:
            # the noise scaled by k < 1)
            assert passes(r.margin_db * 0.999) == r.passed
            assert passes(r.margin_db + math.copysign(1e-3, r.margin_db)) != r.passed


def test_an_sqnr_gate_judges_the_reports_sqnr_and_its_margin_is_the_difference() -> None:
    report = {"accuracy": {"samples": 10, "sqnr_db": 23.6, "top1_agreement": 0.9}}
    (r,) = judge(report, Budgets(min_sqnr_db=25.0))
    assert r.metric == "sqnr_db" and not r.passed
    assert r.margin_db == pytest.approx(-1.4) and "passes 1.4 dB of SQNR higher" in r.verdict()
    (r,) = judge(report, Budgets(min_sqnr_db=20.0))
    assert r.passed and r.margin_db == pytest.approx(3.6)
    (r,) = judge({"accuracy": None}, Budgets(min_sqnr_db=20.0))
    assert r.value is None and not r.passed
