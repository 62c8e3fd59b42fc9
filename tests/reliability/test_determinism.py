"""Same inputs, same flags → byte-identical artifact (and the report says which bytes).

Each source is compiled twice into two output folders: once in this process and
once in a fresh `python -m compiler.cli` process (so nothing cached in memory,
such as torch's exporter counters, can make the two agree by accident), then
the artifacts' sha256 must match each other and each report's
``artifact.sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main
from tests.reliability.test_bad_inputs import _save, good_model

ROOT = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile_here(model: str, out: Path, *flags: str) -> dict:
    result = CliRunner().invoke(main, ["compile", model, "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def _compile_fresh(model: str, out: Path, *flags: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", model, "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "report.json").read_text())


def _artifact(report: dict) -> Path:
    path = Path(report["artifact"]["path"])
    assert path.is_file()
    assert _sha(path) == report["artifact"]["sha256"]  # the report names these exact bytes
    assert path.stat().st_size == report["artifact"]["size_bytes"]
    return path


FLAGS = ("--threads", "1", "--report", "json", "--no-torch-baseline", "--eval-samples", "16")


def test_onnx_file_compiles_to_identical_bytes(tmp_path: Path) -> None:
    model = _save(tmp_path / "model.onnx", good_model())
    a = _artifact(_compile_here(str(model), tmp_path / "a", *FLAGS))
    b = _artifact(_compile_fresh(str(model), tmp_path / "b", *FLAGS))
    assert a.name == b.name
    assert _sha(a) == _sha(b)


@pytest.mark.slow
def test_ort_format_is_identical_up_to_onnxruntimes_table_order(tmp_path: Path) -> None:
    """onnxruntime 1.31 writes the .ort kernel type-string table from a hash map whose
    order changes between processes (see targets/cpu.py): the .onnx written beside it
    is byte-identical and the .ort has the same size; byte identity of the .ort itself
    is a known gap, reported as xfail when it shows."""
    model = _save(tmp_path / "model.onnx", good_model())
    a = _artifact(_compile_here(str(model), tmp_path / "a", *FLAGS, "--format", "ort"))
    b = _artifact(_compile_fresh(str(model), tmp_path / "b", *FLAGS, "--format", "ort"))
    assert a.suffix == b.suffix == ".ort"
    assert _sha(a.with_suffix(".onnx")) == _sha(b.with_suffix(".onnx"))
    assert a.stat().st_size == b.stat().st_size
    if _sha(a) != _sha(b):
        pytest.xfail("onnxruntime's .ort serialization is not byte-deterministic")


def test_zoo_model_compiles_to_identical_bytes(tmp_path: Path) -> None:
    ra = _compile_here("digits_cnn", tmp_path / "a", *FLAGS)
    rb = _compile_fresh("digits_cnn", tmp_path / "b", *FLAGS)
    assert _sha(_artifact(ra)) == _sha(_artifact(rb))
    assert ra["model"]["sha256"] == rb["model"]["sha256"]  # the export itself is stable
    assert ra["accuracy"] == rb["accuracy"]  # same data, same seed, same numbers
