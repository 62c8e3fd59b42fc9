"""Every budget kind, passing and failing, from flags (`edgec gate`) and from
`[tool.edgec]` (`edgec compile`) — #16's done-criterion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main

#: budget → (report value it judges, given the report; "min" budgets pass at or above)
KINDS = {
    "max-size-mb": lambda r: r["artifact"]["size_bytes"] / 1e6,
    "max-compressed-size-mb": lambda r: r["artifact"]["compressed_size_bytes"] / 1e6,
    "max-latency-ms": lambda r: r["latency_ms"]["p50"],
    "max-p99-latency-ms": lambda r: r["latency_ms"]["p99"],
    "min-speedup": lambda r: r["baseline"]["speedup"],
    "min-accuracy": lambda r: r["accuracy"]["top1_agreement"],
    "max-accuracy-drop": lambda r: 1.0 - r["accuracy"]["top1_agreement"],
}


@pytest.fixture(scope="module")
def report(small_cnn_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real report whose accuracy is lowered to 0.9 agreement: a perfect FP32 run (1.0)
    cannot fail a minimum of at most 1 nor pass a maximum drop of less than 0."""
    out = tmp_path_factory.mktemp("kinds") / "run"
    result = CliRunner().invoke(
        main,
        ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1", "--report", "json"],
    )
    assert result.exit_code == 0, result.output
    path = out / "report.json"
    data = json.loads(path.read_text())
    data["accuracy"]["top1_agreement"] = 0.9
    path.write_text(json.dumps(data))
    return path


def _limits(kind: str, value: float) -> tuple[float, float]:
    """(a limit it meets, a limit it breaks)."""
    if kind.startswith("min-"):
        return value * 0.5, min(value * 2 + 0.01, 1.0) if kind == "min-accuracy" else value * 2
    return value * 2 + 0.01, value * 0.5


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_budget_from_flags_passes_and_fails(report: Path, kind: str, tmp_path: Path) -> None:
    value = KINDS[kind](json.loads(report.read_text()))
    meets, breaks = _limits(kind, value)
    code, text = _gate(str(report), f"--{kind}", str(meets))
    assert code == 0, text
    junit, md = tmp_path / "j.xml", tmp_path / "s.md"
    code, text = _gate(
        str(report), f"--{kind}", str(breaks), "--junit", str(junit), "--markdown", str(md),
        env={"GITHUB_ACTIONS": "true"},
    )  # fmt: skip
    name = kind.replace("-", "_")
    assert code == 3 and name in text, text
    assert f"::error file={report}" in text  # the annotation
    assert 'failures="1"' in junit.read_text() and name in junit.read_text()
    assert "❌ 1 of 1 budgets failed" in md.read_text() and name in md.read_text()


def _gate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["gate", *args], env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "kind",
    ["max-size-mb", "max-compressed-size-mb", "max-latency-ms", "max-p99-latency-ms",
     "max-memory-mb"],
)  # fmt: skip
def test_each_budget_from_tool_edgec_passes_and_fails(
    small_cnn_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Measured budgets a compile judges itself, read from pyproject.toml's [tool.edgec]."""
    monkeypatch.chdir(tmp_path)
    for limit, code in ((1e6, 0), (1e-9, 3)):
        (tmp_path / "pyproject.toml").write_text(
            f'[tool.edgec]\nthreads = 1\nreport = "json"\n{kind} = {limit}\n'
        )
        result = CliRunner().invoke(main, ["compile", str(small_cnn_onnx), "--out", "run"])
        assert result.exit_code == code, result.output
        gates = json.loads((tmp_path / "run" / "report.json").read_text())["gates"]
        assert [g["name"] for g in gates] == [kind.replace("-", "_")]
