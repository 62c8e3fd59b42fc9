"""The `trtexec` command line equivalent to `BuilderSettings` (pure Python, no TensorRT).

A bundle for a TensorRT board carries this line beside its Python build script,
for people who build engines with NVIDIA's `trtexec` tool. Each setting maps to
one documented option of trtexec's help text (TensorRT 10.x):

- a strongly typed network: `--stronglyTyped` (the graph's types decide the
  precision; no `--fp16`/`--int8`, which 10.x deprecates and 11 removes);
- `workspace_bytes`: `--memPoolSize=workspace:N`, N in MiB (the unit every 10.x
  release takes without a suffix);
- `tf32=False`: `--noTF32`; `sparse_weights`: `--sparsity=enable`;
- `dla_core`: `--useDLACore=N --allowGPUFallback`;
- `builder_optimization_level`: `--builderOptimizationLevel=N`;
- shape ranges of dynamic inputs: `--minShapes/--optShapes/--maxShapes=name:AxBxC,...`
  (a name holding `:` or `,` is quoted with single quotes, as trtexec's help
  says); static inputs need none;
- `--profilingVerbosity=detailed` as `build.configure_builder` sets, a timing
  cache file, and `--skipInference` (build only).
"""

from __future__ import annotations

from targets.tensorrt.settings import BuilderSettings

__all__ = ["trtexec_command"]


def trtexec_command(
    settings: BuilderSettings, *, onnx: str, engine: str, timing_cache: str | None = None
) -> list[str]:
    """`trtexec` and its arguments for building `engine` from `onnx` with `settings`."""
    mib = settings.workspace_bytes / (1 << 20)
    args = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={engine}",
        "--stronglyTyped",
        f"--memPoolSize=workspace:{mib:g}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    if not settings.tf32:
        args.append("--noTF32")
    if settings.sparse_weights:
        args.append("--sparsity=enable")
    if settings.dla_core is not None:
        args += [f"--useDLACore={settings.dla_core}", "--allowGPUFallback"]
    if settings.builder_optimization_level is not None:
        args.append(f"--builderOptimizationLevel={settings.builder_optimization_level}")
    dynamic = [p for p in settings.profiles if not p.is_static]
    for flag, pick in (("min", 0), ("opt", 1), ("max", 2)):
        if dynamic:
            spec = ",".join(
                f"{_name(p.name)}:{'x'.join(str(d) for d in (p.min, p.opt, p.max)[pick])}"
                for p in dynamic
            )
            args.append(f"--{flag}Shapes={spec}")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return args


def _name(name: str) -> str:
    return f"'{name}'" if any(c in name for c in ":,") else name
