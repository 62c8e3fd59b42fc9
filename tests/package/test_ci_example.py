"""docs/ci-example.yml: its steps (docs/ci_steps.sh) run here as a script, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "ci_steps.sh"
FLAGS = ("--eval", "random", "--eval-samples", "8", "--no-torch-baseline", "--threads", "1")


def _steps(model: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`bash docs/ci_steps.sh` with this venv's edgec and python first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "COLUMNS": "200",
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run(
        ["bash", str(SCRIPT), str(model), "x86-avx2", str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_workflow_runs_the_script_and_uploads_the_bundle() -> None:
    workflow = yaml.safe_load((ROOT / "docs" / "ci-example.yml").read_text())
    steps = workflow["jobs"]["compile"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any("pip install" in r for r in runs)
    assert any(r.startswith("bash docs/ci_steps.sh ") for r in runs)
    uploads = [s["with"]["path"] for s in steps if "upload-artifact" in s.get("uses", "")]
    assert "build/${{ matrix.device }}/bundle" in uploads


def test_ci_steps_compile_gate_package_and_smoke_test(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "ci"
    done = _steps(small_cnn_onnx, out, "--precision", "fp32", *FLAGS)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads((out / "run" / "report.json").read_text())
    names = [g["name"] for g in report["gates"]]
    assert report["passed"] and names == ["max_size_mb", "max_memory_mb"]
    assert 'failures="0"' in (out / "gate.xml").read_text()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["files"]["small_cnn.fp32.onnx"]["sha256"] == report["artifact"]["sha256"]
    assert "ok: 4 files match manifest.json" in done.stdout
    assert "output: float32 [1, 10]" in (out / "bundle-smoke.txt").read_text()
    assert done.stdout.strip().endswith(f"bundle: {out / 'bundle'}")


def test_ci_steps_stop_at_a_failed_budget(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "ci"
    done = _steps(small_cnn_onnx, out, "--precision", "fp32", "--max-size-mb", "0.0001", *FLAGS)
    assert done.returncode == 3, done.stderr + done.stdout
    assert 'failures="1"' in (out / "gate.xml").read_text()  # the verdicts are still written
    assert not (out / "bundle").exists()
