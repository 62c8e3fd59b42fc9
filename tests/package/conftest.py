"""A compiled run of the small CNN (cpu, fp32), shared by the package tests of one module."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output  # click ≥ 8.2 mixes stderr into output


QUICK = ("--eval", "random", "--eval-samples", "8", "--no-torch-baseline", "--report", "json")


@pytest.fixture(scope="module")
def run_dir(small_cnn_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgec compile small_cnn.onnx` (fp32, cpu, one thread) → its --out folder."""
    out = tmp_path_factory.mktemp("run") / "small_cnn"
    code, text = run_cli(
        "compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1", *QUICK
    )
    assert code == 0, text
    return out
