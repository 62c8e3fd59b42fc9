"""`edgec gate REPORT...` (#16 part 4): several reports, a table, JUnit, Markdown into
$GITHUB_STEP_SUMMARY, `::error` annotations under GitHub Actions, exit 3 naming each breach."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main


@pytest.fixture(scope="module")
def reports(small_cnn_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs' reports: one compiled with a size budget, one without any."""
    root = tmp_path_factory.mktemp("gate")
    budgeted, plain = root / "budgeted", root / "plain"
    for out, extra in ((budgeted, ["--max-size-mb", "100"]), (plain, [])):
        result = CliRunner().invoke(
            main,
            ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1",
             "--report", "json", *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return [budgeted / "report.json", plain / "report.json"]


def _gate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["gate", *args], env=env)
    return result.exit_code, result.output


def test_budgets_from_flags_judge_every_report(reports: list[Path], tmp_path: Path) -> None:
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    code, text = _gate(
        *map(str, reports), "--max-size-mb", "100", "--junit", str(junit), "--markdown", str(md)
    )
    assert code == 0, text
    assert text.count("passed") == 2
    xml = junit.read_text()
    assert xml.count("<testsuite ") == 2 and 'failures="0"' in xml
    assert md.read_text().startswith("### edgec gate: ✅ all budgets met")


def test_a_breach_exits_3_names_itself_and_annotates_github(
    reports: list[Path], tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    code, text = _gate(*map(str, reports), "--max-latency-ms", "0.000001", env=env)
    assert code == 3, text
    assert text.count("::error file=") == 2
    assert "2 of 2 budgets failed" in text and "max_latency_ms" in text
    written = summary.read_text()
    assert written.startswith("earlier step\n") and "❌ 2 of 2 budgets failed" in written


def test_without_flags_each_report_is_judged_by_its_own_gates(
    reports: list[Path], tmp_path: Path
) -> None:
    md = tmp_path / "gate.md"
    code, text = _gate(*map(str, reports), "--markdown", str(md))
    assert code == 0, text
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ")][1:]
    # the budgeted run's one gate; the other run has none
    assert len(rows) == 1 and "max_size_mb: artifact size" in rows[0]


def test_nothing_to_judge_exits_2(reports: list[Path], tmp_path: Path) -> None:
    plain = tmp_path / "report.json"
    shutil.copy(reports[1], plain)
    assert json.loads(plain.read_text())["gates"] == []
    code, text = _gate(str(plain))
    assert code == 2 and "nothing to judge" in text
