"""QAT through the CLI: the same Q/DQ form and report as PTQ, accuracy kept, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from compiler.cli import main


def test_digits_cnn_qat_keeps_label_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "o"
    res = CliRunner().invoke(
        main, ["compile", "digits_cnn", "--precision", "int8", "--qat", "--epochs", "2",
               "--threads", "1", "--report", "json", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    # issue 4: QAT INT8 label accuracy >= FP32 accuracy - 0.2 point on the held-out split
    assert acc["top1_accuracy"] >= acc["baseline_top1_accuracy"] - 0.002
    assert report["quantization"]["method"].startswith("qat")
    assert report["precision"] == "int8"
    assert (out / "qat_checkpoints").is_dir()  # kept for --resume


def test_qat_refusals_are_usage_errors(small_cnn_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "compile",
            str(small_cnn_onnx),
            "--precision",
            "int8",
            "--qat",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert res.exit_code == 2 and "torch source" in res.output
    assert runner.invoke(main, ["compile", "digits_cnn", "--qat"]).exit_code == 2  # needs int8
    assert runner.invoke(main, ["compile", "digits_cnn", "--epochs", "3"]).exit_code == 2
