"""#16's done-criterion: mobilenet_v2 INT8 bundles for every CPU profile run in a fresh
virtual environment holding only onnxruntime and numpy (no torch, no edgec) and
reproduce edgec's outputs exactly; a tampered file is refused.

Slow: an INT8 compile of mobilenet_v2 and a `pip install` into a new venv from the
package registry (skipped, with the reason, where the registry cannot be reached).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.cli import main
from compiler.ground.sessions import open_session, session_options

pytestmark = pytest.mark.slow

CPU_PROFILES = ("x86-avx2", "x86-avx512-vnni", "raspberry-pi-5")


def _cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with onnxruntime and numpy from the registry, nothing else."""
    root = tmp_path_factory.mktemp("fresh") / "env"
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0:
        pytest.skip(f"cannot install onnxruntime into a fresh venv: {install.stderr[-300:]}")
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "torch" not in listed and "edgec" not in listed and "onnx==" not in listed
    return python


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mnv2") / "run"
    _cli("compile", "mobilenet_v2", "--precision", "int8", "--out", str(out),
         "--eval-samples", "16", "--report", "json")  # fmt: skip
    return out


@pytest.mark.parametrize("device", CPU_PROFILES)
def test_bundle_reproduces_edgecs_outputs_in_a_fresh_env(
    fresh_python: Path, run_dir: Path, tmp_path: Path, device: str
) -> None:
    from models.registry import get_model

    bundle = tmp_path / device
    _cli("package", str(run_dir), "--device", device, "--out", str(bundle))
    manifest = json.loads((bundle / "manifest.json").read_text())
    inputs, _ = get_model("mobilenet_v2").evaluation_data(4)
    np.savez(tmp_path / "inputs.npz", input=inputs)
    # the bundle's model with the board's thread count, as edgec's onnxruntime runs it: on
    # x86 CPUs without VNNI the u8s8 kernels can saturate, and which rows do depends on
    # how the work is split between threads
    threads = int((manifest.get("device") or {}).get("threads") or 1)
    session = open_session(bundle / manifest["runtime"]["model"], session_options(threads=threads))
    expected = session.run(None, {session.get_inputs()[0].name: inputs})[0]

    saved = tmp_path / "outputs.npz"
    run = subprocess.run(
        [str(fresh_python), "run.py", "--inputs", str(tmp_path / "inputs.npz"), "--save", str(saved)],
        cwd=bundle, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = np.load(saved)
    np.testing.assert_array_equal(got[next(iter(got.files))], expected)

    model = next(bundle.rglob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    tampered = subprocess.run(
        [str(fresh_python), "run.py", "--check"], cwd=bundle, capture_output=True, text=True
    )
    assert tampered.returncode != 0 and "sha256" in tampered.stderr.lower()
    assert sys.executable != str(fresh_python)
