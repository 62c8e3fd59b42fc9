"""The QAT stage for the compile pipeline, with plain arguments (no CompileConfig here).

`edgec compile MODEL --precision int8 --qat --epochs N [--lr X] [--resume]` maps to
`run_qat_stage(torch_module, target_spec, ..., ptq=PtqOptions(...))`, which returns
the QDQ model (already cleaned and quantized: the pipeline must not run its
cleanup passes or PTQ on it — onnxsim would fold the int8 weights back to float)
and the report's ``qat`` section. `ptq` is the PTQ configuration QAT starts
from, the same object post-training quantization takes: QAT honours its choices
or refuses them by name (`train.refused_ptq_options`). Errors a user can fix
raise `PassOptionError` (the compile stage's exit 2): an untraceable module, a
checkpoint from another run, a PTQ option QAT cannot honour.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from torch import nn

from passes.errors import PassOptionError
from passes.qat.train import QatOptions, QatProgress, qat
from passes.quantize.options import PtqOptions
from passes.quantize.spec import QuantSpec, spec_by_name

logger = logging.getLogger(__name__)

#: Adam learning rate for `--qat` without `--lr`: measured on the zoo (bench/qat_compare.py):
#: MobileNetV2 distillation gains over PTQ, digits_cnn keeps its accuracy.
DEFAULT_LR = 3e-5
DEFAULT_BATCH_SIZE = 32
_PTQ_DEFAULTS = PtqOptions()


def run_qat_stage(
    module: nn.Module,
    spec: QuantSpec | str,
    *,
    train_inputs: np.ndarray,
    train_labels: np.ndarray | None,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray | None,
    epochs: int,
    lr: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = 17,
    threads: int | None = None,
    ptq: PtqOptions = _PTQ_DEFAULTS,
    progress: Callable[[str, int, int], None] | None = None,
    status: Callable[[QatProgress], None] | None = None,
) -> tuple[ir.Model, dict[str, Any]]:
    """QAT of `module` for `spec` (a QuantSpec or its name); returns (QDQ model, report section).

    `ptq` configures the PTQ run QAT starts from (on the first `ptq.samples` training
    inputs). `progress("qat", done_steps, total_steps)` drives a bar; `status` receives
    every step's running loss and agreement (for the bar's description).
    """
    if isinstance(spec, str):
        try:
            spec = spec_by_name(spec)
        except KeyError as e:
            raise PassOptionError(str(e.args[0])) from None
    if resume and checkpoint_dir is None:
        raise PassOptionError(
            "--resume needs a checkpoint directory (the output directory keeps one)"
        )

    def on_step(p: QatProgress) -> None:
        if progress is not None:
            progress("qat", (p.epoch - 1) * p.steps + p.step, p.epochs * p.steps)
        if status is not None:
            status(p)

    try:
        options = QatOptions(
            input_names=tuple(input_names),
            output_names=tuple(output_names),
            opset=opset,
            threads=threads,
            ptq=ptq,
        )
        result = qat(
            module,
            spec,
            train_inputs=train_inputs,
            train_labels=train_labels,
            eval_inputs=eval_inputs,
            eval_labels=eval_labels,
            epochs=epochs,
            lr=DEFAULT_LR if lr is None else lr,
            batch_size=batch_size,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=on_step,
            options=options,
        )
    except ValueError as e:  # QatUnsupported, PassOptionError, bad data or checkpoints
        raise PassOptionError(f"--qat: {e}") from None
    section = result.to_dict()
    section["overflow"] = _guard_overflow(result.model, spec, ptq, train_inputs)
    section["lr"] = DEFAULT_LR if lr is None else lr
    section["batch_size"] = batch_size
    section["train_samples"] = int(len(train_inputs))
    section["labels"] = train_labels is not None
    return result.model, section


def _guard_overflow(
    model: ir.Model, spec: QuantSpec | str, ptq: PtqOptions | None, inputs: np.ndarray
) -> dict[str, object] | None:
    """PTQ's overflow check on the exported model (`passes/quantize/overflow.py`): the
    layers whose u8s8 kernel overflows on this CPU store their trained weights as
    uint8, the same values (re-rounding them to 7 bits would undo what training
    learned). None when the options turn the check off or the spec is not U8S8."""
    from passes.quantize.data import CalibrationStream, model_inputs
    from passes.quantize.overflow import applies, guard, store_uint8

    options = ptq or PtqOptions()
    spec = spec_by_name(spec) if isinstance(spec, str) else spec
    if not options.overflow_guard or not applies(spec):
        return None
    stream = CalibrationStream(
        inputs,
        model_inputs(model),
        samples=options.overflow_samples,
        batch_size=options.batch_size,
    )
    check = guard(model, stream, threads=options.threads)
    store_uint8(model, check.overflowing)
    return check.to_dict()
