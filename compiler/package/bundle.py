"""`edgec package RUN_DIR --device PROFILE`: a compile's artifact as a bundle for one board.

Every check runs before anything is written (unknown device, a target or
precision the board cannot use, a RUN_DIR that is not a run, an artifact that
differs from its report, an --out that would overwrite something else), and
the bundle is assembled in a staging folder beside `--out` and moved into
place only when complete, so a failed run leaves nothing behind.

Layout, for onnxruntime targets (cpu, cuda): the ONNX, its ORT-format model,
`required_operators.config`, `run.py`, `manifest.json`. For tensorrt: the
ONNX, `builder_settings.json`, `trtexec.txt`, `build_engine.py`, `run.py`
(onnxruntime on the ONNX, a smoke test before the engine exists) and
`manifest.json`. The manifest hashes every other file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from compiler import __version__
from compiler.devices import check_fits, resolve_device
from compiler.ground.errors import UsageError
from compiler.package import manifest as mf
from compiler.package.onnxruntime_bundle import REDUCED_BUILD, write_onnxruntime_files
from compiler.package.run_dir import CompiledRun, read_run
from compiler.stages.outputs import make_staging
from targets.profiles import DeviceProfile

__all__ = ["Bundle", "default_out", "package_run"]

RUNNER = "run.py"
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class Bundle:
    """A written bundle: its folder and its manifest."""

    path: Path
    manifest: dict[str, Any]


def default_out(run_dir: Path, device: str) -> Path:
    """`RUN_DIR/bundle-<device>`: the bundle stays with the run it came from."""
    return Path(run_dir) / f"bundle-{device}"


def package_run(
    run_dir: Path, device: str, *, out: Path | None = None, target: str | None = None
) -> Bundle:
    """Package the run in `run_dir` for `device` (its default target unless `target`)."""
    profile = resolve_device(device)
    target = target or profile.target
    run = read_run(Path(run_dir))
    check_fits(profile, target, run.precision)
    out = Path(out) if out is not None else default_out(run.run_dir, profile.name)
    _check_out(out, run.run_dir)
    staging = make_staging(out)
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the bundle onto the board
    try:
        manifest = _assemble(run, profile, target, staging)
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Bundle(out, manifest)


def _assemble(run: CompiledRun, profile: DeviceProfile, target: str, bundle: Path) -> dict:
    """Write the model files, the runner and the manifest into `bundle`."""
    tensorrt: dict[str, Any] | None = None
    if target == "tensorrt":
        from compiler.package.tensorrt_bundle import write_tensorrt_files

        batch = int((run.report.get("latency_ms") or {}).get("batch") or 1)
        roles, tensorrt = write_tensorrt_files(
            run.onnx_path, run.proto, bundle, profile, batch=batch
        )
        model_file = run.onnx_path.name
    else:
        roles = write_onnxruntime_files(run.onnx_path, bundle, arch=profile.arch)
        model_file = run.onnx_path.with_suffix(".ort").name
    runner = resources.files("compiler.package") / "templates" / RUNNER
    (bundle / RUNNER).write_text(runner.read_text())
    roles[RUNNER] = "checks the hashes, then runs the model with onnxruntime and numpy"
    manifest = _manifest(run, profile, target, model_file, tensorrt)
    manifest["files"] = mf.file_entries(bundle, roles)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _manifest(
    run: CompiledRun,
    profile: DeviceProfile,
    target: str,
    model_file: str,
    tensorrt: dict[str, Any] | None,
) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "format": mf.FORMAT,
        "edgec_version": __version__,
        "model": run.report.get("model"),
        **mf.io_specs(run.proto),
        "preprocessing": mf.preprocessing(run.report),
        "precision": run.precision,
        "target": target,
        "device": profile.to_dict(),
        "runtime": {
            "name": "tensorrt" if target == "tensorrt" else "onnxruntime",
            "model": model_file,
            "providers": _PROVIDERS[target],
            "onnxruntime_version": ort.__version__,
            "reduced_build": None if tensorrt else REDUCED_BUILD,
        },
        "tensorrt": tensorrt,
        "report": mf.measured_figures(run.report),
    }


def _check_out(out: Path, run_dir: Path) -> None:
    """Refuse an --out that is the run, holds it, or is a folder that is not a bundle."""
    o, r = out.resolve(), run_dir.resolve()
    if o == r or o in r.parents:
        raise UsageError(f"--out {out} would replace the run itself; choose another folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise UsageError(f"--out {out} is a non-empty folder that is not a bundle; choose another")


def _replace_dir(staging: Path, out: Path) -> None:
    """Put the finished bundle at `out`, replacing an older bundle there."""
    old = None
    if out.exists():
        old = staging.with_name(staging.name + ".old")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
