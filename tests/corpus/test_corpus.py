"""The foreign-architecture corpus (bench/corpus.py) as tests: every model, exported by
both exporters, compiles in FP32 with every output within 1e-4 of the input model
(relative to the output's scale) and in INT8 with its first output at cosine >= 0.98,
both against the input file under onnxruntime on edgec's `--eval random` inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.corpus import (
    CASES,
    EXPORTERS,
    FP32_REL_TOLERANCE,
    INT8_MIN_COSINE,
    KNOWN_FAILURES,
    merged,
    run_case,
)
from bench.corpus_case import Case


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for exporter in EXPORTERS:
            reason = KNOWN_FAILURES.get((case.name, exporter))
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            params.append(pytest.param(case, exporter, marks=marks, id=f"{case.name}-{exporter}"))
    return params


def _check(case: Case, exporter: str, workdir: Path) -> None:
    row = run_case(case, exporter, workdir)
    assert "error" not in row, f"{row['error']['stage']}: {row['error']['message']}"
    worst = row["fp32"]["outputs"]
    assert row["fp32"]["worst_rel_error"] <= FP32_REL_TOLERANCE, worst
    assert row["int8"]["first_output_cosine"] >= INT8_MIN_COSINE, row["int8"]["outputs"]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "exporter"), _params())
def test_corpus_model(case: Case, exporter: str, tmp_path: Path) -> None:
    _check(case, exporter, tmp_path)


def test_corpus_smoke_distilbert_torchscript(tmp_path: Path) -> None:
    """The cheapest corpus entry end to end in the default run (about 10 s)."""
    _check(next(c for c in CASES if c.name == "distilbert"), "torchscript", tmp_path)


def test_merge_replaces_rerun_rows_and_keeps_the_rest_in_case_order() -> None:
    old = {
        "note": "kept",
        "rows": [
            {"model": "bert", "exporter": "dynamo", "passed": True},
            {"model": "resnet18", "exporter": "torchscript", "passed": False},
            {"model": "no_longer_a_case", "exporter": "dynamo", "passed": True},
        ],
    }
    new = [{"model": "resnet18", "exporter": "torchscript", "passed": True}]
    doc = merged(old, new)
    assert doc["note"] == "kept" and "environment" in doc
    assert [(r["model"], r["exporter"], r["passed"]) for r in doc["rows"]] == [
        ("resnet18", "torchscript", True),
        ("bert", "dynamo", True),
    ]
