"""Reliability figures for the README: the ONNX conformance run and artifact determinism.

- **Conformance**: every ONNX backend node test case (`onnx.backend.test.case.node`)
  through cleanup + fusion, compared with the original under onnxruntime
  (`compiler.conformance`): counts run / passed / failed / skipped by reason, and
  the wall time on this machine (one process, one thread).
- **Determinism**: each model is compiled twice, each time in a fresh
  `python -m compiler.cli` process into its own folder; the artifacts' sha256 must
  match each other and the reports' ``artifact.sha256``.

`python -m bench.run reliability` writes `bench/results/reliability.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DETERMINISM_MODELS = ("digits_cnn", "mobilenet_v2")
FLAGS = ("--threads", "1", "--report", "json", "--no-torch-baseline")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile(model: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", model, "--out", str(out), *FLAGS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compile {model} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return json.loads((out / "report.json").read_text())


def determinism(models: tuple[str, ...] = DETERMINISM_MODELS) -> dict[str, Any]:
    """Compile each model twice in fresh processes; compare the artifacts' bytes."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            digests, reported = [], []
            for run in ("a", "b"):
                report = _compile(name, Path(tmp) / run / name)
                digests.append(_sha(Path(report["artifact"]["path"])))
                reported.append(report["artifact"]["sha256"])
            results[name] = {
                "sha256": digests,
                "identical": len(set(digests)) == 1,
                "report_matches_file": digests == reported,
            }
            print(f"  determinism {name}: {results[name]}", flush=True)
    return results


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("onnx", "onnxruntime-gpu", "onnx-ir", "onnxsim", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def run(out_path: Path) -> dict[str, Any]:
    from compiler.conformance import run_conformance

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int, name: str) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  conformance {done}/{total} ({name})", flush=True)

    conformance = run_conformance(progress=progress)
    summary = conformance.to_dict()
    print(
        f"  conformance: {summary['run']} run, {summary['passed']} passed, "
        f"{summary['failed']} failed, {summary['skipped']} skipped in {summary['seconds']} s",
        flush=True,
    )
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(),
        "conformance": summary,
        "conformance_skipped_cases": {k: sorted(v) for k, v in sorted(conformance.skipped.items())},
        "determinism": determinism(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":  # pragma: no cover
    run(ROOT / "bench" / "results" / "reliability.json")
