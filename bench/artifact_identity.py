"""Artifact identity across refactors: sha256 of what `edgec compile` writes.

A refactor that claims "no behaviour change" must leave the `.onnx` artifacts
byte-identical. This suite compiles a fixed set of cases through the CLI (a
subprocess, exactly as a user runs it) and records each artifact's sha256
under a label (`python -m bench.artifact_identity LABEL`; `make bench` uses
"current"). With two labels in the JSON, it also records whether every pair
matches. Hashes depend on the machine's floating-point kernels (calibration
and rounding run in onnxruntime and numpy), so compare labels recorded on one
machine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: (case name, model, extra flags); "{onnx}" / "{calib}" are filled with files made here.
CASES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("digits_cnn fp32", "digits_cnn", ("--precision", "fp32")),
    ("digits_cnn int8", "digits_cnn", ("--precision", "int8")),
    ("mobilenet_v2 fp32", "mobilenet_v2", ("--precision", "fp32")),
    ("mobilenet_v2 int8", "mobilenet_v2", ("--precision", "int8")),
    ("onnx file fp32", "{onnx}", ("--precision", "fp32")),
    ("onnx file int8", "{onnx}", ("--precision", "int8", "--calib", "{calib}")),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _onnx_source(work: Path) -> tuple[Path, Path]:
    """A digits_cnn exported to a plain .onnx file, and a .npy of calibration inputs."""
    from compiler.export import export_torch
    from models.registry import get_model

    spec = get_model("digits_cnn")
    calib = spec.calibration_data(64).astype(np.float32)
    proto = export_torch(
        spec.build(),
        [calib[:1]],
        input_names=[i.name for i in spec.inputs],
        output_names=list(spec.output_names),
        opset=17,
    )
    onnx_path, calib_path = work / "digits.onnx", work / "calib.npy"
    onnx_path.write_bytes(proto.SerializeToString())
    np.save(calib_path, calib)
    return onnx_path, calib_path


def artifact_hashes() -> dict[str, str]:
    """Compile every case with the CLI; {case: sha256 of the artifact}."""
    edgec = Path(sys.executable).parent / "edgec"
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path, calib_path = _onnx_source(work)
        for i, (case, model, flags) in enumerate(CASES):
            out = work / f"run{i}"
            args = [a.format(onnx=onnx_path, calib=calib_path) for a in (model, *flags)]
            cmd = [str(edgec), "compile", *args, "--out", str(out), "--report", "json"]
            print(f"  {case}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            report = json.loads((out / "report.json").read_text())
            hashes[case] = _sha256(Path(report["artifact"]["path"]))
    return hashes


def record(path: Path, label: str) -> dict[str, object]:
    """Add `label`'s hashes to the JSON at `path`; compare against every other label."""
    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    data["runs"][label] = artifact_hashes()
    labels = list(data["runs"])
    data["identical"] = {
        f"{a} vs {b}": data["runs"][a] == data["runs"][b]
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def run(path: Path) -> None:
    print(json.dumps(record(path, "current")["identical"], indent=2))


if __name__ == "__main__":
    label = sys.argv[1] if len(sys.argv) > 1 else "current"
    if label.startswith("-"):  # `--help` once recorded a run under the label "--help"
        print(__doc__)
        sys.exit(0 if label in ("-h", "--help") else 2)
    target = Path(__file__).parent / "results" / "artifact_identity.json"
    print(json.dumps(record(target, label), indent=2))
