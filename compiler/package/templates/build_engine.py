#!/usr/bin/env python3
"""Build this bundle's TensorRT engine ON THE BOARD, from its ONNX and builder_settings.json.

Written by `edgec package` for a TensorRT device profile. An engine runs only
on the GPU model and TensorRT version that built it, so the bundle carries the
ONNX and the settings edgec derived, and the board builds. Needs TensorRT 10.x
or 11.x's Python bindings (JetPack 6.1+ on Jetson Orin); not numpy, not edgec.
Every file is checked against manifest.json (sha256) before the build.

    python3 build_engine.py                 writes the engine named in manifest.json
    python3 build_engine.py --no-dla        build for the GPU even where settings ask for DLA
    python3 build_engine.py --out my.engine

TensorRT Python API used (docs.nvidia.com/deeplearning/tensorrt/latest/_static/
python-api/: Builder, BuilderConfig, OptimizationProfile, TimingCache, pyOnnx):
strongly typed networks (`NetworkDefinitionCreationFlag.STRONGLY_TYPED` where
the bindings have it; TensorRT 11 types every network strongly), no precision
flags (removed in 11: the graph's float16 tensors and Q/DQ nodes decide).
`trtexec.txt` in the bundle is the same build as a trtexec command line.

Exit codes: 0 built; 2 usage; 4 a file differs from the manifest, or TensorRT
refused the model; 5 TensorRT missing or too old, or no DLA where one is asked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

HERE = Path(__file__).resolve().parent


class BuildError(Exception):
    """One line for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = 4) -> None:
        super().__init__(message)
        self.code = code


def check_files(manifest: dict[str, Any]) -> None:
    """Every file the manifest lists must be there with its sha256."""
    for name, entry in sorted((manifest.get("files") or {}).items()):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise BuildError(f"manifest.json lists {name!r}, outside the bundle; refusing")
        path = HERE / rel
        if not path.is_file():
            raise BuildError(f"{name} is missing; the bundle is incomplete, refusing to build")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.get("sha256"):
            raise BuildError(f"{name} differs from manifest.json (sha256 mismatch); refusing")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BuildError(
            f"TensorRT's Python bindings are not importable ({e}); on Jetson install JetPack "
            "6.1+ (python3-libnvinfer), elsewhere pip install 'tensorrt>=10,<12'",
            5,
        ) from None
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 10:
        raise BuildError(f"TensorRT {trt.__version__} is too old: this build needs 10 or 11", 5)
    return trt


def parse_onnx(trt: Any, logger: Any, builder: Any, onnx_path: Path) -> tuple[Any, Any]:
    """(network, parser): a strongly typed network parsed from `onnx_path`; the parser owns
    the weights, so the caller keeps it until the build is done. BuildError on a refusal."""
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        first = "no error reported"
        if parser.num_errors:
            error = parser.get_error(0)
            first = " ".join(str(error.desc() if hasattr(error, "desc") else error).split())
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {first}")
    return network, parser


def configure(trt: Any, builder: Any, network: Any, settings: dict[str, Any], use_dla: bool) -> Any:
    """A builder config carrying `settings` (builder_settings.json)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_bytes"]))
    if settings.get("sparse_weights"):
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if not settings.get("tf32", True):
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings.get("builder_optimization_level") is not None:
        config.builder_optimization_level = int(settings["builder_optimization_level"])
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    core = settings.get("dla_core")
    if core is not None and use_dla:
        if int(builder.num_DLA_cores) <= int(core):
            raise BuildError(
                f"the settings ask for DLA core {core}, this board and TensorRT have "
                f"{builder.num_DLA_cores}; rerun with --no-dla to build for the GPU",
                5,
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    ranges = {p["name"]: p for p in settings.get("profiles", [])}
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if all(d >= 0 for d in tuple(tensor.shape)):
            continue
        shape = ranges.get(tensor.name)
        if shape is None:
            raise BuildError(f"input {tensor.name!r} is dynamic and has no shape range")
        if profile is None:
            profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, shape["min"], shape["opt"], shape["max"])
    if profile is not None:
        config.add_optimization_profile(profile)
    return config


def use_timing_cache(config: Any, path: Path) -> None:
    """Reuse kernel timings from `path` when TensorRT takes them, else start empty."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(out: Path, use_dla: bool) -> Path:
    """Check the bundle, build the engine, write it and the timing cache beside it."""
    manifest = json.loads((HERE / "manifest.json").read_text())
    check_files(manifest)
    tensorrt = manifest["tensorrt"]
    settings = json.loads((HERE / tensorrt["settings"]).read_text())
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError("TensorRT cannot create a builder here (no usable GPU?)", 5)
    network, parser = parse_onnx(trt, logger, builder, HERE / tensorrt["onnx"])
    config = configure(trt, builder, network, settings, use_dla)
    cache_path = out.with_suffix(".timing.cache")
    use_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("TensorRT could not build the engine (its log above says why)")
    del parser  # the network's weights are no longer needed    write_atomically(out, bytes(memoryview(serialized)))
    cache = config.get_timing_cache()
    if cache is not None:
        write_atomically(cache_path, bytes(memoryview(cache.serialize())))
    print(f"built {out} ({out.stat().st_size} bytes) with TensorRT {trt.__version__}")
    return out


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="Build this bundle's TensorRT engine here.")
    cli.add_argument("--out", type=Path, help="the engine file [the manifest's name]")
    cli.add_argument("--no-dla", action="store_true", help="build for the GPU, not DLA")
    args = cli.parse_args(argv)
    manifest = json.loads((HERE / "manifest.json").read_text())
    out = args.out or HERE / manifest["tensorrt"]["engine"]
    build(Path(out), use_dla=not args.no_dla)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BuildError as e:
        print(f"build_engine.py: error: {e}", file=sys.stderr)
        sys.exit(e.code)
