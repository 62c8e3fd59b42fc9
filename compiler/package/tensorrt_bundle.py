"""The TensorRT part of a bundle: what the board needs to build its own engine.

An engine is specific to the GPU and TensorRT version that built it, so no
engine is shipped (and none is built here): the bundle carries the ONNX, the
builder settings edgec derives for the board (`targets.tensorrt` with the
device profile: workspace cap, DLA core, sparsity, shape ranges, TF32) as
JSON, the same build as a `trtexec` command line, and `build_engine.py`, a
script on TensorRT's Python API that checks the bundle's hashes and builds.
The settings are derived exactly as `--target tensorrt` would on the board,
so a model TensorRT cannot build as asked (int8 Q/DQ of the CPU's asymmetric
form, fp16 without float16 tensors) is refused here, before anything ships.
"""

from __future__ import annotations

import json
import shlex
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import onnx

from compiler.ground.errors import InvalidInput
from targets.profiles import DeviceProfile
from targets.tensorrt import TensorRTTarget, check_onnx_for_tensorrt
from targets.tensorrt.trtexec import trtexec_command

__all__ = ["BUILD_SCRIPT", "SETTINGS_NAME", "TRTEXEC_NAME", "write_tensorrt_files"]

SETTINGS_NAME = "builder_settings.json"
TRTEXEC_NAME = "trtexec.txt"
BUILD_SCRIPT = "build_engine.py"


def write_tensorrt_files(
    onnx_path: Path, proto: onnx.ModelProto, bundle: Path, profile: DeviceProfile, *, batch: int
) -> tuple[dict[str, str], dict[str, Any]]:
    """Write the ONNX, settings, trtexec line and build script into `bundle`; returns
    ({file name: role}, the manifest's `tensorrt` section)."""
    problems = check_onnx_for_tensorrt(proto)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidInput(
            f"{onnx_path.name} would not build on {profile.name}: {problems[0]}{more}"
        )
    settings = TensorRTTarget(batch=batch, device_profile=profile).settings_for(proto)
    onnx_name = onnx_path.name
    engine = Path(onnx_name).with_suffix(".engine").name
    shutil.copyfile(onnx_path, bundle / onnx_name)
    (bundle / SETTINGS_NAME).write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
    command = trtexec_command(
        settings,
        onnx=onnx_name,
        engine=engine,
        timing_cache=Path(engine).with_suffix(".timing.cache").name,
    )
    (bundle / TRTEXEC_NAME).write_text(shlex.join(command) + "\n")
    template = resources.files("compiler.package") / "templates" / BUILD_SCRIPT
    (bundle / BUILD_SCRIPT).write_text(template.read_text())
    roles = {
        onnx_name: "model (ONNX); the board builds the engine from it",
        SETTINGS_NAME: "TensorRT builder settings derived for this board",
        TRTEXEC_NAME: "the same build as a trtexec command line",
        BUILD_SCRIPT: "builds the engine on the board with TensorRT's Python API",
    }
    section = {
        "engine": engine,
        "engine_built": False,
        "build_on_board": "an engine runs only on the GPU and TensorRT version that built it: "
        f"run `python3 {BUILD_SCRIPT}` (or the command in {TRTEXEC_NAME}) on the board",
        "onnx": onnx_name,
        "settings": SETTINGS_NAME,
        "trtexec": shlex.join(command),
        "build_script": BUILD_SCRIPT,
        "requires": "TensorRT 10.x or 11.x",
        "legality": "passed edgec's TensorRT ONNX check (check_onnx_for_tensorrt): opset, "
        "operators, attributes, element types, Q/DQ form",
    }
    return roles, section
