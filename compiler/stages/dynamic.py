"""The dynamic INT8 stage (`--quant-mode dynamic`, CPU target): int8 weights, activations
quantized per call by onnxruntime (`passes.quantize.dynamic`).

Calibration data is optional here: when the run has it (the zoo's, or --calib),
GPTQ rounds the weights from the layers' input moments; without it they round to
nearest. `--precision auto` compiles this candidate beside static INT8 for
transformer graphs (`wants_dynamic`), where dynamic quantization is the peer's path.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from compiler.config import CompileConfig
from compiler.sources import ModelSource
from compiler.stages.boundary import pass_errors
from compiler.stages.quantize import calibration_source, ptq_options
from targets.base import Target

#: the candidate key `--precision auto` gives dynamic INT8 (its report says int8)
DYNAMIC_CANDIDATE = "int8-dynamic"


def quant_mode(config: CompileConfig) -> str:
    """The run's --quant-mode: static unless asked."""
    return config.quant_mode or "static"


def wants_dynamic(model: ir.Model, config: CompileConfig, target: Target) -> bool:
    """Whether `--precision auto` adds the dynamic INT8 candidate: the target runs it, no
    QAT, no explicit --quant-mode static, and the model is a transformer."""
    from passes.quantize.transformer import is_transformer

    return (
        config.precision == "auto"
        and not config.qat
        and config.quant_mode != "static"
        and "dynamic" in target.quant_modes
        and is_transformer(model.graph)
    )


def run_dynamic(
    model: ir.Model,
    config: CompileConfig,
    source: ModelSource,
    *,
    threads: int,
) -> tuple[ir.Model, dict[str, Any]]:
    """Dynamic INT8 of the optimized FP32 model; returns (model, report section)."""
    from passes.quantize.dynamic import quantize_dynamic

    data, preprocess, _, description = calibration_source(config, source)
    options = ptq_options(config, source, threads=threads)
    with pass_errors():
        quantized, summary = quantize_dynamic(
            model, data, options, preprocess=preprocess, reduce_range=_board_reduce_range(config)
        )
    return quantized, {"calibration_data": description, **summary.to_dict()}


def _board_reduce_range(config: CompileConfig) -> bool | None:
    """7-bit weights as the --device board needs them (its int8 kernels saturate, or
    not); None without a device: the compiling CPU decides, as before."""
    if config.device is None:
        return None
    from targets.profiles import get_profile

    return get_profile(config.device).int8_saturates
