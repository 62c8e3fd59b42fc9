"""The CLI contract: exit codes, one-line errors, nothing written on failure, input untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output  # click ≥ 8.2 mixes stderr into output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compile_onnx_file_writes_artifact_and_report(small_cnn_onnx: Path, tmp_path: Path) -> None:
    before = _digest(small_cnn_onnx)
    out = tmp_path / "out"
    code, text = _run(
        "compile",
        str(small_cnn_onnx),
        "--out",
        str(out),
        "--threads",
        "1",
        "--report",
        "json,md,html",
    )
    assert code == 0, text
    assert _digest(small_cnn_onnx) == before  # the input is never modified
    report = json.loads((out / "report.json").read_text())
    from compiler.report_schema import REPORT_KEYS

    assert set(REPORT_KEYS) <= set(report)
    artifact = Path(report["artifact"]["path"])
    assert artifact.exists() and artifact.stat().st_size == report["artifact"]["size_bytes"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == report["artifact"]["sha256"]
    # compiled graph computes what the original computes (random inputs, fp32)
    assert report["accuracy"]["max_abs_error"] < 1e-4
    assert report["accuracy"]["top1_agreement"] == 1.0
    assert report["passes"] and all(
        {"name", "changed", "nodes_before", "nodes_after", "seconds"} <= set(p)
        for p in report["passes"]
    )
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms"]["iterations"] >= 10
    assert (out / "report.md").exists() and "<svg" in (out / "report.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an onnx model" * 3, b"\x08\x07\x12\x04trunc"],
    ids=["empty", "text", "truncated"],
)
def test_bad_model_files_exit_4_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    out = tmp_path / "out"
    code, text = _run("compile", str(bad), "--out", str(out))
    assert code == 4, text
    assert text.strip().count("\n") == 0 and "Traceback" not in text
    assert bad.read_bytes() == content
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_truncated_real_model_exit_4(small_cnn_onnx: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(small_cnn_onnx.read_bytes()[:500])
    code, text = _run("compile", str(bad), "--out", str(tmp_path / "o"))
    assert code == 4 and "Traceback" not in text


def test_missing_file_exit_4(tmp_path: Path) -> None:
    code, text = _run("compile", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o"))
    assert code == 4 and "does not exist" in text


def test_wrong_input_shape_exit_4(small_cnn_onnx: Path, tmp_path: Path) -> None:
    code, text = _run(
        "compile", str(small_cnn_onnx), "--input-shape", "1,3,16", "--out", str(tmp_path / "o")
    )
    assert code == 4, text
    assert "rank" in text and not (tmp_path / "o").exists()


def test_factory_with_wrong_input_shape_exit_4(tmp_path: Path) -> None:
    code, text = _run(
        "compile",
        "tests.compiler.factories:tiny_mlp",
        "--input-shape",
        "1,7",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 4, text
    assert "rejects inputs of shape (1, 7)" in text


def test_factory_compiles(tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, text = _run(
        "compile",
        "tests.compiler.factories:tiny_mlp",
        "--input-shape",
        "2,12",
        "--out",
        str(out),
        "--threads",
        "1",
    )
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["source"] == "torch"
    assert report["accuracy"]["max_abs_error"] < 1e-4
    assert report["baseline"]["torch_latency_ms"] > 0


def test_usage_errors_exit_2(small_cnn_onnx: Path, tmp_path: Path) -> None:
    assert _run("compile", "no_such_model")[0] == 2
    assert _run("compile", str(small_cnn_onnx), "--precision", "int3")[0] == 2
    assert _run("compile", "tests.compiler.factories:tiny_mlp")[0] == 2  # needs --input-shape
    assert _run("compile", str(small_cnn_onnx), "--target", "fpga")[0] == 2


def test_a_format_the_target_does_not_write_is_refused_before_any_work(
    small_cnn_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    code, text = _run("compile", str(small_cnn_onnx), "--format", "engine", "--out", str(out))
    assert code == 2, text
    assert "target cpu writes onnx, ort artifacts, not --format engine" in text
    assert not out.exists()


def test_gate_failure_exit_3_with_verdicts(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    junit = tmp_path / "gates.xml"
    code, text = _run(
        "compile",
        str(small_cnn_onnx),
        "--out",
        str(out),
        "--threads",
        "1",
        "--max-size-mb",
        "0.000001",
        "--min-accuracy",
        "0.5",
        "--junit",
        str(junit),
    )
    assert code == 3, text
    assert "gate max_size_mb FAILED" in text
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False
    assert 'failures="1"' in junit.read_text()
    # re-judge the same report with edgec gate
    assert _run("gate", str(out / "report.json"), "--max-size-mb", "100")[0] == 0
    assert _run("gate", str(out / "report.json"), "--max-latency-ms", "0.000001")[0] == 3
    assert _run("gate", str(small_cnn_onnx), "--max-size-mb", "1")[0] == 4


def test_inspect_and_bench(small_cnn_onnx: Path) -> None:
    code, text = _run("inspect", str(small_cnn_onnx), "--json")
    assert code == 0, text
    info = json.loads(text)
    assert info["ops"]["Conv"] == 1 and info["targets"]["cpu"] == "ok"
    assert info["inputs"][0]["shape"][1:] == [3, 16, 16]
    code, text = _run("bench", str(small_cnn_onnx), "--threads", "1", "--json")
    assert code == 0, text
    assert json.loads(text)["latency_ms"]["p50"] > 0


def test_cuda_target_unavailable_exit_5(small_cnn_onnx: Path, tmp_path: Path) -> None:
    from targets.registry import get_target

    if get_target("cuda").unavailable_reason() is None:
        pytest.skip("a CUDA GPU is present here")
    code, text = _run(
        "compile", str(small_cnn_onnx), "--target", "cuda", "--out", str(tmp_path / "o")
    )
    assert code == 5, text
    assert not (tmp_path / "o").exists()


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith("edgec: error:") and "Traceback" not in proc.stderr


def test_unknown_model_name_suggests_the_closest_zoo_name(tmp_path: Path) -> None:
    code, text = _run("compile", "mobilenetv2", "--out", str(tmp_path / "o"))
    assert code == 2 and "did you mean 'mobilenet_v2'?" in text
    code, text = _run("compile", "zzz", "--out", str(tmp_path / "o"))
    assert code == 2 and "did you mean" not in text


def test_markdown_cells_escape_pipes() -> None:
    from compiler.report import to_markdown

    md = to_markdown({"model": {"name": "m"}, "accuracy": {"cosine": 1.0}, "passes": []})
    assert "max \\|err\\|" in md  # the accuracy row's "max |err|" cut its cell before
    for line in md.splitlines():
        if line.startswith("| "):
            assert line.count("|") - line.count("\\|") == 3, line
