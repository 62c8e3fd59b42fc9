"""The trtexec command line for BuilderSettings: one documented option per setting."""

from __future__ import annotations

from targets.tensorrt.settings import BuilderSettings
from targets.tensorrt.shapes import ShapeProfile


def test_every_setting_maps_to_its_option() -> None:
    from targets.tensorrt.trtexec import trtexec_command

    settings = BuilderSettings(
        precision="int8",
        sparse_weights=True,
        workspace_bytes=3 << 29,  # 1.5 GiB
        profiles=(
            ShapeProfile("ids:0", (1, 8), (4, 128), (8, 256)),
            ShapeProfile("mask", (1, 8), (4, 128), (8, 256)),
            ShapeProfile("static", (1, 3), (1, 3), (1, 3)),
        ),
        tf32=True,
        dla_core=0,
        builder_optimization_level=5,
    )
    args = trtexec_command(settings, onnx="m.onnx", engine="m.engine", timing_cache="m.cache")
    assert args == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--stronglyTyped",
        "--memPoolSize=workspace:1536",
        "--profilingVerbosity=detailed",
        "--skipInference",
        "--sparsity=enable",
        "--useDLACore=0",
        "--allowGPUFallback",
        "--builderOptimizationLevel=5",
        # a name with ':' is quoted as trtexec's help says; static inputs get no range
        "--minShapes='ids:0':1x8,mask:1x8",
        "--optShapes='ids:0':4x128,mask:4x128",
        "--maxShapes='ids:0':8x256,mask:8x256",
        "--timingCacheFile=m.cache",
    ]
    # no weak-typing precision flags: TensorRT 10 deprecates them and 11 removes them
    assert not {"--fp16", "--int8", "--best"} & set(args)


def test_fp32_static_engine() -> None:
    from targets.tensorrt.trtexec import trtexec_command

    settings = BuilderSettings(
        precision="fp32",
        sparse_weights=False,
        workspace_bytes=1 << 30,
        profiles=(ShapeProfile("x", (1, 3), (1, 3), (1, 3)),),
        tf32=False,
    )
    args = trtexec_command(settings, onnx="a.onnx", engine="a.engine")
    assert "--noTF32" in args and "--memPoolSize=workspace:1024" in args
    assert not [a for a in args if "Shapes=" in a or a.startswith("--timingCacheFile")]
