"""Read a compile's output folder (RUN_DIR) for packaging, trusting nothing in it blindly.

A run folder holds `report.json` and the artifact it describes. The report's
artifact path may be absolute and stale (a CI job downloads the folder
elsewhere), so the artifact is looked up by file name inside RUN_DIR and its
sha256 must equal the report's: a bundle ships exactly what was measured.
Bundles carry ONNX (onnxruntime converts it to ORT format; TensorRT builds its
engine on the board from it), so an `.ort` artifact is packaged from the
`.onnx` written beside it, and a `.engine` (built for the compiling GPU) is
refused with what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from compiler.ground.errors import InvalidInput, UsageError
from compiler.ground.io import load_onnx_proto, read_report, sha256_file

__all__ = ["CompiledRun", "read_run"]


@dataclass(frozen=True)
class CompiledRun:
    """One compile's outputs: the folder, its report, and the ONNX artifact to ship."""

    run_dir: Path
    report: dict[str, Any]
    onnx_path: Path
    proto: onnx.ModelProto

    @property
    def precision(self) -> str:
        return str(self.report.get("precision"))


def read_run(run_dir: Path) -> CompiledRun:
    """The run in `run_dir`; UsageError (exit 2) when it is not a run folder, InvalidInput
    (exit 4) when its report or artifact is damaged or differs from what was measured."""
    run_dir = Path(run_dir)
    report_path = run_dir / "report.json"
    if not run_dir.is_dir():
        raise UsageError(f"RUN_DIR {run_dir} is not a folder; give the --out of an edgec compile")
    if not report_path.is_file():
        raise UsageError(f"{run_dir} holds no report.json; give the --out of an edgec compile")
    report = read_report(report_path, needs="artifact")
    artifact = report["artifact"]
    path = run_dir / Path(str(artifact.get("path") or "")).name
    if not path.is_file():
        raise InvalidInput(
            f"{run_dir} lacks the artifact its report describes ({path.name}); compile again"
        )
    if sha256_file(path) != artifact.get("sha256"):
        raise InvalidInput(
            f"{path} differs from the artifact report.json measured (sha256 mismatch); "
            "compile again instead of packaging a changed file"
        )
    onnx_path = _onnx_of(path, str(artifact.get("format")))
    return CompiledRun(run_dir, report, onnx_path, load_onnx_proto(onnx_path))


def _onnx_of(artifact: Path, fmt: str) -> Path:
    """The ONNX file to ship for an artifact of format `fmt`."""
    if fmt == "onnx":
        return artifact
    if fmt == "ort":
        onnx_path = artifact.with_suffix(".onnx")
        if not onnx_path.is_file():
            raise InvalidInput(f"{artifact.parent} lacks {onnx_path.name}, the ONNX of its .ort")
        return onnx_path
    raise InvalidInput(
        f"the run's artifact is a {fmt} file ({artifact.name}), built for the GPU that compiled "
        "it; a bundle carries ONNX and the board builds its own engine: compile with "
        "--target cpu and the same --precision, then package that run"
    )
