"""The FP16 stage: float16 weights and activations where the calibration data says it is safe.

`passes.precision.Fp16Pass` decides per node from a reference run on the
calibration data (the zoo's calibration set, or `--calib`, never the
evaluation set) and keeps the rest in float32 with Casts at the boundaries;
`--keep-io-types` keeps the model's float32 inputs and outputs. The pass is
recorded in `report.passes` like every other pass, and its summary (nodes
converted, nodes kept float32 and why, output error on the calibration data)
is the report's `fp16` section.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from compiler.config import CompileConfig
from compiler.recording import PassRecord, RecordingPass
from compiler.sources import ModelSource
from compiler.stages.boundary import pass_errors
from compiler.stages.quantize import calibration_source
from passes import graph_tools
from passes.precision import Fp16Options, Fp16Pass, Fp16PassResult


def fp16_options(config: CompileConfig, *, threads: int, batch: int | None = None) -> Fp16Options:
    """The run's FP16 choices: --keep-io-types and --calib-samples, and `batch` when the
    model fixes its batch size; the rest are the pass's."""
    defaults = Fp16Options()
    with pass_errors():
        return Fp16Options(
            keep_io_types=config.keep_io_types,
            samples=config.calib_samples or defaults.samples,
            batch_size=batch or defaults.batch_size,
            threads=threads,
        )


def run_fp16(
    model: ir.Model,
    config: CompileConfig,
    source: ModelSource,
    *,
    threads: int,
    records: list[PassRecord],
    static_batch: int | None = None,
) -> tuple[ir.Model, dict[str, Any]]:
    """Convert a copy of the optimized FP32 model; returns (model, report section)."""
    options = fp16_options(config, threads=threads, batch=static_batch)
    data, preprocess, _, description = calibration_source(config, source, samples=options.samples)
    work = graph_tools.clone(model)  # the FP32 candidate and baseline stay as they are
    with pass_errors():
        result = RecordingPass(Fp16Pass(data, options, preprocess=preprocess), records)(work)
    if not isinstance(result, Fp16PassResult):  # RecordingPass hands back the inner result
        raise TypeError(f"Fp16Pass returned {type(result).__name__}")
    return result.model, {"calibration_data": description, **result.summary.as_dict()}
