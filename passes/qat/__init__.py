"""Quantization-aware training: fake quantization placed by PTQ's own plan, trained in
torch (labels, or distillation from the FP32 model), exported to PTQ's QDQ form.

    result = qat(module, CPU_SPEC, train_inputs=x, eval_inputs=x_eval, epochs=2, lr=1e-5, batch_size=32)
    result.model            # onnx_ir.Model in QDQ form, int8 weights, as PTQ writes it

QAT starts from PTQ and takes PTQ's own options object, as its config wraps it:
``QatOptions(ptq=PtqOptions(method="entropy"))``; every PTQ option is honoured
or refused by name (`refused_ptq_options`: the float fallback, exclusions and
the sensitivity report are PTQ's alone).

Modules: `fake_quant` (torch numerics equal to ONNX Q/DQ), `graph` (fx tracing,
layer wrapping, export markers), `prepare` (placement read from the PTQ plan),
`init` (start from PTQ's result or PTQ's calibration), `train` (`qat`: the loop,
checkpoints, resume), `export` (`export_qat`: Q/DQ written by PTQ's pass),
`stage` (`run_qat_stage`: the pipeline's entry with plain arguments).
"""

from passes.qat.export import export_qat
from passes.qat.fake_quant import ActivationQuantizer, QuantLayer
from passes.qat.graph import QatUnsupported
from passes.qat.init import apply_structure, calibrate, init_from_ptq
from passes.qat.prepare import QatModel, prepare_qat
from passes.qat.stage import DEFAULT_LR, run_qat_stage
from passes.qat.train import (
    CHECKPOINT_NAME,
    QatOptions,
    QatProgress,
    QatResult,
    qat,
    refused_ptq_options,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_LR",
    "ActivationQuantizer",
    "QatModel",
    "QatOptions",
    "QatProgress",
    "QatResult",
    "QatUnsupported",
    "QuantLayer",
    "apply_structure",
    "calibrate",
    "export_qat",
    "init_from_ptq",
    "prepare_qat",
    "qat",
    "refused_ptq_options",
    "run_qat_stage",
]
