"""The onnxruntime part of a bundle: the ONNX, its ORT-format model, and the required operators.

onnxruntime's reduced ("minimal") builds load only ORT-format models and
compile in only the kernels a configuration file lists
(`build.py --minimal_build --include_ops_by_config required_operators.config`,
onnxruntime's "Build for custom operators / reduced operator kernels" docs).

- The ORT-format model is optimized offline at `ORT_ENABLE_EXTENDED`, as the
  cpu target's `.ort` is: the `ALL` level adds NCHWc layout transforms whose
  block size follows the compiling CPU's vector width, and the bundle runs on
  the board. For aarch64 boards int8 Q/DQ may stay signed
  (`session.qdqisint8allowed`, as onnxruntime's converter does for
  `--target_platform arm`).
- The configuration is written by onnxruntime's own tool
  (`onnxruntime.tools.ort_format_model.create_config_from_models`) from the
  ORT-format model, so it lists the kernels after the offline fusions (e.g.
  com.microsoft FusedConv), which is what a reduced build must contain. Its
  header names the model by its file name in the bundle, not the build path.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from compiler.ground.errors import InvalidInput
from compiler.ground.sessions import open_session, session_options

__all__ = ["CONFIG_NAME", "REDUCED_BUILD", "write_onnxruntime_files"]

CONFIG_NAME = "required_operators.config"
#: how onnxruntime's reduced build takes the config (its tools/ci_build/build.py)
REDUCED_BUILD = (
    f"./build.sh --config MinSizeRel --minimal_build --include_ops_by_config {CONFIG_NAME}"
)


def write_onnxruntime_files(onnx_path: Path, bundle: Path, *, arch: str) -> dict[str, str]:
    """Write the ONNX, `<stem>.ort` and the required-operators config into `bundle`;
    returns {file name: role} for the manifest."""
    onnx_name = onnx_path.name
    shutil.copyfile(onnx_path, bundle / onnx_name)
    ort_name = Path(onnx_name).with_suffix(".ort").name
    _convert(bundle / onnx_name, bundle / ort_name, arch=arch)
    _required_operators(bundle / ort_name, bundle / CONFIG_NAME)
    return {
        onnx_name: "model (ONNX)",
        ort_name: "model (ORT format, for onnxruntime's minimal builds)",
        CONFIG_NAME: "required operators, for onnxruntime's reduced builds",
    }


def _convert(onnx_path: Path, ort_path: Path, *, arch: str) -> None:
    """ONNX → ORT format at the extended level (see the module docstring)."""
    opts = session_options(level="extended")
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.add_session_config_entry("session.qdqisint8allowed", "1" if arch == "aarch64" else "0")
    opts.optimized_model_filepath = str(ort_path)
    try:
        open_session(onnx_path, opts)
    except Exception as e:
        first = " ".join(str(e).split())[:300]
        raise InvalidInput(
            f"onnxruntime cannot convert {onnx_path.name} to ORT format: {first}"
        ) from e
    if not ort_path.is_file() or ort_path.stat().st_size == 0:
        raise InvalidInput(f"onnxruntime wrote no ORT-format file for {onnx_path.name}")


def _required_operators(ort_path: Path, config: Path) -> None:
    """onnxruntime's required-operators config for `ort_path`, naming it by file name."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    # the tool logs "Created config in <temporary path>" at INFO on its own handler
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / CONFIG_NAME
        create_config_from_models([ort_path], raw, False)
        lines = raw.read_text().splitlines()
    body = [line for line in lines if not line.startswith("#")]
    header = ["# Generated from model/s:", f"# - {ort_path.name}"]
    config.write_text("\n".join(header + body) + "\n")
