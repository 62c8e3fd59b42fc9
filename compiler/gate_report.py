"""`edgec gate REPORT...`: judge existing reports and say so where CI people look.

One verdict per (report, budget): a terminal table, JUnit XML (one test suite per
report), a Markdown summary (appended to `$GITHUB_STEP_SUMMARY` when GitHub Actions
sets it) and, when `GITHUB_ACTIONS` is set, one `::error` annotation per breach, so
the run's page names each one. Budgets come from the flags; without any, each report
is judged by the gates it was compiled with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compiler.config import Budgets
from compiler.gates import XML_HEADER, GateResult, judge, margin_words, testsuite_lines
from compiler.ground.errors import UsageError
from compiler.ground.io import read_report


@dataclass(frozen=True)
class Judged:
    """One report and its verdicts."""

    path: Path
    model: str
    precision: str
    target: str
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def judge_reports(paths: list[Path], budgets: Budgets) -> list[Judged]:
    """Every report against `budgets`, or against its own recorded gates when none is set."""
    flagged = any(v is not None for v in vars(budgets).values())
    judged = []
    for path in paths:
        data = read_report(path, needs="edgec_version", kind=str)
        if flagged:
            results = tuple(judge(data, budgets))
        else:
            results = tuple(GateResult(**g) for g in data.get("gates") or [])
        judged.append(
            Judged(
                path,
                str((data.get("model") or {}).get("name", path.parent.name)),
                str(data.get("precision")),
                str(data.get("target")),
                results,
            )
        )
    if not any(j.results for j in judged):
        raise UsageError(
            "nothing to judge: give a budget (--max-size-mb, --max-latency-ms, --min-accuracy) "
            "or reports compiled with budgets"
        )
    return judged


def table_rows(judged: list[Judged]) -> list[tuple[str, str, str, str, str]]:
    """(model, gate, value, budget, verdict) per verdict."""
    rows = []
    for j in judged:
        for r in j.results:
            value = "n/a" if r.value is None else f"{r.value:.4g}"
            op = ">=" if r.name.startswith("min_") else "<="
            verdict = "passed" if r.passed else "FAILED"
            if r.margin_db is not None:
                verdict += f" ({margin_words(r.margin_db)})"
            rows.append(
                (
                    f"{j.model} ({j.precision}, {j.target})",
                    f"{r.name}: {r.metric}",
                    value,
                    f"{op} {r.limit:g}",
                    verdict,
                )
            )
    return rows


def markdown(judged: list[Judged]) -> str:
    """A GitHub-flavoured summary: the verdict first, then one row per gate."""
    failed = sum(not r.passed for j in judged for r in j.results)
    total = sum(len(j.results) for j in judged)
    head = "✅ all budgets met" if not failed else f"❌ {failed} of {total} budgets failed"
    lines = [
        f"### edgec gate: {head}",
        "",
        "| model | gate | value | budget | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in table_rows(judged):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def error_annotations(judged: list[Judged]) -> list[str]:
    """GitHub Actions workflow commands: one `::error` per breach, titled by model."""
    lines = []
    for j in judged:
        for r in j.results:
            if not r.passed:
                message = r.verdict().replace("%", "%25").replace("\n", "%0A")
                lines.append(f"::error file={j.path},title=edgec gate {j.model}::{message}")
    return lines


def junit(judged: list[Judged]) -> str:
    """JUnit XML: one test suite per report, one test case per gate."""
    lines = [XML_HEADER, "<testsuites>"]
    for j in judged:
        lines += testsuite_lines(j.results, suite=f"edgec.{j.model}.{j.precision}", indent="  ")
    lines.append("</testsuites>")
    return "\n".join(lines) + "\n"


def append_step_summary(text: str) -> Path | None:
    """Append to `$GITHUB_STEP_SUMMARY` when GitHub Actions set it; the path, else None."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(text)
    return Path(target)
