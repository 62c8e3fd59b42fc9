"""Zoo model → export → compile → artifact matches the report (the foundation's done-when)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from compiler.cli import main


def _compile(*args: str) -> dict:
    result = CliRunner().invoke(main, ["compile", *args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "report.json").read_text())


def test_mobilenet_v2_fp32_matches_torch(tmp_path: Path) -> None:
    report = _compile("mobilenet_v2", "--out", str(tmp_path / "mnv2"), "--report", "json,html")
    acc = report["accuracy"]
    assert acc["samples"] >= 32
    assert acc["top1_agreement"] == 1.0
    assert acc["max_abs_error"] < 1e-3
    assert report["baseline"]["torch_latency_ms"] > 0  # torch eager measured in the same run
    assert report["model"]["params"] > 3_000_000


def test_digits_cnn_label_accuracy(tmp_path: Path) -> None:
    report = _compile("digits_cnn", "--out", str(tmp_path / "d"))
    assert report["accuracy"]["top1_accuracy"] >= 0.95
    assert report["accuracy"]["top1_agreement"] == 1.0
    assert not any(
        p["name"] == "RemoveDropoutPass" and p["nodes_after"] > p["nodes_before"]
        for p in report["passes"]
    )


@pytest.mark.parametrize("name", ["digits_cnn", "digits_gru", "resnet18", "mobilenet_v2"])
def test_exported_onnx_file_compiles_through_same_path(name: str, tmp_path: Path) -> None:
    """Any .onnx exported from a zoo model compiles as a plain file (judged on random inputs)."""
    from compiler.sources import resolve

    path = tmp_path / f"{name}.onnx"
    onnx.save(resolve(name).proto, str(path))
    report = _compile(
        str(path), "--out", str(tmp_path / "o"), "--eval-samples", "4", "--report", "json"
    )
    assert report["model"]["source"] == "onnx"
    assert report["accuracy"]["cosine"] > 0.99999
    assert report["accuracy"]["max_abs_error"] < 1e-3
