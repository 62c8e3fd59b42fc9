"""edgec compare: rows from report.json, the Pareto front per machine, and its outputs.

Reports here are written by hand (the figures compare reads, nothing else) so that
the checks are exact and fast; test_sweep.py compares real compiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compiler.cli import main
from compiler.compare import compare, load_runs, pareto_front, row_of, table_rows, to_markdown
from compiler.compare_html import to_html

HOST_A = {"hostname": "box-a", "cpu": "Cortex-A78", "cores": 8, "os": "Linux", "python": "3.11"}
HOST_B = {"hostname": "box-b", "cpu": "AMD EPYC", "cores": 2, "os": "Linux", "python": "3.11"}


def _report(
    precision: str,
    p50: float,
    accuracy: float,
    *,
    environment: dict[str, Any] | None = HOST_A,
    prune: float | None = None,
    size_bytes: int = 100_000,
) -> dict[str, Any]:
    return {
        "edgec_version": "0.1.0",
        "model": {"name": "digits_cnn", "source": "zoo"},
        "target": "cpu",
        "precision": precision,
        "artifact": {"path": "x.onnx", "size_bytes": size_bytes},
        "baseline": {"precision": "fp32", "latency_ms": 1.0, "latency_ratio": p50 / 1.0},
        "latency_ms": {"p50": p50, "p99": p50 * 2},
        "accuracy": {"top1_accuracy": accuracy, "top1_agreement": 0.99, "cosine": 0.999},
        "gates": [],
        "passed": True,
        "pruning": None if prune is None else {"mode": "unstructured", "ratio": prune},
        "environment": environment,
    }


def _write(tmp_path: Path, name: str, report: dict[str, Any]) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_pareto_front_on_constructed_points() -> None:
    # (accuracy, latency): higher accuracy and lower latency are better
    points = [
        (0.90, 10.0),  # front: nothing at least as accurate is as fast
        (0.95, 12.0),  # front: the most accurate at its speed
        (0.85, 8.0),  # front: the fastest
        (0.80, 11.0),  # dominated by (0.90, 10)
        (0.95, 15.0),  # dominated by (0.95, 12): as accurate, slower
        (0.85, 9.0),  # dominated by (0.85, 8): as accurate, slower
        (0.97, 20.0),  # front: the most accurate
    ]
    assert pareto_front(points) == [True, True, True, False, False, False, True]
    assert pareto_front([(0.9, 5.0), (0.9, 5.0)]) == [True, True]  # ties dominate nothing
    assert pareto_front([]) == []


def test_rows_carry_the_reports_figures(tmp_path: Path) -> None:
    runs = [
        _write(tmp_path, "fp32", _report("fp32", 1.0, 0.98, size_bytes=106_442)),
        _write(tmp_path, "int8", _report("int8", 0.6, 0.97, size_bytes=37_907)),
        _write(tmp_path, "int8-prune", _report("int8", 0.7, 0.95, prune=0.5)),
    ]
    comparison = compare(load_runs(runs))
    fp32, int8, pruned = comparison.rows
    assert (fp32.run, fp32.precision, fp32.size_mb, fp32.p50_ms) == ("fp32", "fp32", 0.106442, 1.0)
    assert (int8.latency_ratio, int8.metric, int8.accuracy) == (0.6, "top1_accuracy", 0.97)
    assert (pruned.prune_ratio, fp32.prune_ratio) == (0.5, 0.0)
    assert fp32.machine == "box-a · Cortex-A78"
    # int8-prune is slower and less accurate than int8: off the front
    assert [r.pareto for r in comparison.rows] == [True, True, False]
    assert comparison.machines == ["box-a · Cortex-A78"] and comparison.notes == []
    cells = table_rows(comparison)
    assert cells[1][:8] == ["int8", "digits_cnn", "int8", "cpu", "0", "0.03791", "0.6", "×0.6"]
    assert cells[1][8] == "top1_accuracy 0.97" and cells[1][10] == "★"


def test_runs_from_different_machines_are_flagged_and_fronted_apart(tmp_path: Path) -> None:
    runs = [
        _write(tmp_path, "a-fp32", _report("fp32", 1.0, 0.98)),
        _write(tmp_path, "a-int8", _report("int8", 0.5, 0.98)),
        # slower and less accurate than both box-a runs, but alone on its machine
        _write(tmp_path, "b-int8", _report("int8", 3.0, 0.90, environment=HOST_B)),
        _write(tmp_path, "old", _report("int8", 0.1, 0.99, environment=None)),
    ]
    comparison = compare(load_runs(runs))
    assert [r.pareto for r in comparison.rows] == [False, True, True, True]
    assert comparison.machines == ["box-a · Cortex-A78", "box-b · AMD EPYC", "unknown machine"]
    assert any("3 machines" in n and "per machine" in n for n in comparison.notes)
    assert "3 machines" in to_markdown(comparison)
    html = to_html(comparison)
    assert html.count("<svg") == 1 and "3 machines" in html
    for machine in comparison.machines:
        assert machine in html  # one panel per machine, titled with it


def test_html_is_self_contained_with_the_table_and_labelled_plot(tmp_path: Path) -> None:
    runs = [
        _write(tmp_path, "digits-fp32", _report("fp32", 1.0, 0.98)),
        _write(tmp_path, "digits-int8", _report("int8", 0.6, 0.97)),
    ]
    html = to_html(compare(load_runs(runs)))
    assert html.startswith("<!doctype html>") and "<?xml" not in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert "digits-fp32" in svg and "digits-int8" in svg and "Pareto front" in svg
    assert "<table>" in html and "<script" not in html and "http://" not in html.split("<svg")[0]


def test_a_gate_failure_shows_in_the_row() -> None:
    report = _report("int8", 0.6, 0.97)
    report["gates"] = [{"name": "max_latency_ms", "passed": False}, {"name": "x", "passed": True}]
    row = row_of("r", report)
    assert (row.exit_code, row.error) == (3, "1 of 2 budgets failed")


def test_compare_cli_writes_markdown_html_and_json(tmp_path: Path) -> None:
    runs = [
        _write(tmp_path, "fp32", _report("fp32", 1.0, 0.98)),
        _write(tmp_path, "int8", _report("int8", 0.6, 0.97)),
    ]
    md, page = tmp_path / "c.md", tmp_path / "c.html"
    args = ["compare", *map(str, runs), "--markdown", str(md), "--html", str(page), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["run"] for r in data["runs"]] == ["fp32", "int8"]
    assert [r["p50_ms"] for r in data["runs"]] == [1.0, 0.6]
    assert "| int8 | digits_cnn | int8 |" in md.read_text()
    assert "<svg" in page.read_text()
    table = CliRunner().invoke(main, ["compare", *map(str, runs)])
    assert table.exit_code == 0 and "int8" in table.output
    assert "measured on: box-a · Cortex-A78" in table.output


def test_a_sweep_folder_stands_for_its_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _write(sweep, "b-int8", _report("int8", 0.6, 0.97))
    _write(sweep, "a-fp32", _report("fp32", 1.0, 0.98))
    (sweep / "compare.html").write_text("<html></html>")
    other = _write(tmp_path, "other", _report("fp32", 2.0, 0.9))
    assert [r.run for r in load_runs([sweep, other])] == ["a-fp32", "b-int8", "other"]


@pytest.mark.parametrize("content", [None, "{not json", '["a list"]'])
def test_missing_or_corrupt_report_exits_2_in_one_line(content: str | None, tmp_path: Path) -> None:
    good = _write(tmp_path, "good", _report("fp32", 1.0, 0.98))
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "report.json").write_text(content)
    result = CliRunner().invoke(main, ["compare", str(good), str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error:") and str(bad) in lines[0]
