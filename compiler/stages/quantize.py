"""The INT8 stage: where calibration data comes from and how `quantize` is called.

The target owns *what* to quantize (`target.quant_spec`); passes/quantize does
*how*. Calibration data: the zoo's calibration set (disjoint from its evaluation
set), a folder of images read with the zoo model's own preprocessing, a `.txt`
file of sentences (one a line) read with a zoo text model's own tokenizer, or
`.npy`/`.npz` files, streamed in batches.

The run's PTQ choices become one `PtqOptions` in one place (`ptq_options`),
used by post-training quantization (`run`) and by QAT's PTQ initialisation
(`run_qat`) alike, so no flag is lost on the way to either: `--calib-method`
and `--calib-samples` reach both; `--auto-fallback` and `--sensitivity` are
post-training choices that `--qat` refuses (exit 2) rather than ignores.

`--auto-fallback` with `--min-accuracy Z` keeps layers in floating point, best
accuracy gain per latency cost first, until top-1 agreement with the FP32 model on a
calibration subset reaches Z: the evaluation set is never used to make decisions, so
the reported accuracy stays an honest held-out number. It keeps at least
`--fallback-speedup-kept` (default 0.8) of the time all-INT8 saves over FP32, and
stays within `--min-speedup` and `--max-latency-ms` when they are given; when Z
cannot be reached within that, the run says so (`sanity.fallback_warnings`).

Passes raise their own errors; the calls into them run inside
`compiler.stages.boundary.pass_errors`, which gives them the CLI's exit codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from compiler.config import CompileConfig
from compiler.data import (
    EvalSet,
    graph_inputs,
    is_text_file,
    random_description,
    random_feeds,
    read_sentences,
    text_tokenizer,
    training_inputs,
)
from compiler.ground.errors import UsageError
from compiler.recording import PassRecord, count_nodes
from compiler.sources import ModelSource
from compiler.stages.boundary import pass_errors
from compiler.stages.opset import at_least
from passes.quantize.options import PtqOptions
from passes.quantize.spec import QuantSpec
from targets.base import Target

log = logging.getLogger(__name__)


def calibration_samples(config: CompileConfig, source: ModelSource) -> int | None:
    """--calib-samples, else the zoo model's own default, else PTQ's (None: all samples)."""
    if config.calib_samples:
        return config.calib_samples
    if source.zoo_spec is not None:
        return source.zoo_spec.default_calib_samples
    return PtqOptions().samples


def ptq_options(
    config: CompileConfig, source: ModelSource, *, threads: int = 0, batch: int | None = None
) -> PtqOptions:
    """The run's PTQ choices, for PTQ itself (`run`) and QAT's PTQ initialisation
    (`run_qat`): calibration method and sample count, the float fallback to
    --min-accuracy with --auto-fallback, the per-layer --sensitivity report; `batch`:
    the batch size the model fixes, if it does."""
    fallback = config.auto_fallback
    if fallback and not config.budgets.judges_accuracy:
        raise UsageError(
            "--auto-fallback needs --min-accuracy or --min-sqnr-db (the budget to keep)"
        )
    defaults = PtqOptions()
    kept = config.fallback_speedup_kept
    budgets = config.budgets
    with pass_errors():
        return PtqOptions(
            method=config.calib_method or defaults.method,
            samples=calibration_samples(config, source),
            min_agreement=budgets.min_accuracy if fallback else None,
            min_sqnr_db=budgets.min_sqnr_db if fallback else None,
            # the fallback's latency bound: what it must keep of INT8's saving, and the
            # run's own latency budgets (per call: --max-latency-ms only at batch 1)
            min_speedup_kept=(kept or None) if kept is not None else defaults.min_speedup_kept,
            max_latency_ratio=1 / budgets.min_speedup if fallback and budgets.min_speedup else None,
            max_latency_ms=budgets.max_latency_ms
            if fallback and config.batch == 1 and budgets.max_latency_ms
            else None,
            sensitivity=config.sensitivity or fallback,
            # the fallback's mode measures the float choices (stem, skip path) too, where
            # this machine can time the target: onnxruntime's CPU provider, on this board
            float_choices="measured"
            if fallback and config.target == "cpu" and _times_the_board(config.device)
            else defaults.float_choices,
            overflow_guard=config.int8_overflow != "off",
            overflow_weights=config.int8_overflow
            if config.int8_overflow in ("7bit", "uint8")
            else defaults.overflow_weights,
            threads=threads,
            # a model that fixes its batch takes exactly that many samples per run
            batch_size=batch or defaults.batch_size,
        )


def _times_the_board(device: str | None) -> bool:
    """Whether this machine's timings speak for `device` (None: this machine is the
    board): same architecture and the same int8 kernel kind. Else --auto-fallback
    leaves the float stem and skip path to the spec's rules, and says so."""
    if device is None:
        return True
    from compiler.machine import host_cpu
    from targets.profiles import get_profile

    board = get_profile(device)
    arch, saturates = host_cpu()
    if (board.arch, board.int8_saturates) == (arch, saturates):
        return True
    log.warning(
        "--auto-fallback: the float stem and skip path keep the spec's rules: this "
        "machine (%s%s) cannot time a %s (%s%s)",
        arch,
        ", int8 without VNNI" if saturates else "",
        device,
        board.arch,
        ", int8 without VNNI" if board.int8_saturates else "",
    )
    return False


def check_calibration(config: CompileConfig, source: ModelSource) -> None:
    """Refuse, before any expensive work, a run that will need calibration data it
    cannot get (`calibration_source` reads the data itself, later)."""
    arg = config.calib_source
    if arg == "random":
        return
    if arg in (None, "zoo") and source.zoo_spec is None:
        raise UsageError(
            f"{source.name} is not a zoo model: give calibration data with --calib "
            "(a .npy/.npz file, a folder of images for zoo image models, or `random` "
            "for seeded random inputs, which only indicate)"
        )
    spec = source.zoo_spec
    if (
        arg not in (None, "zoo")
        and Path(arg).is_dir()
        and getattr(spec, "preprocess", None) is None
    ):
        raise UsageError(
            f"--calib {arg} is a folder of images, but {source.name} has no image "
            "preprocessing; give a .npy/.npz of preprocessed inputs instead"
        )
    if is_text_file(arg):
        text_tokenizer(spec, "--calib", arg)  # a model that reads no text: exit 2
        read_sentences(Path(arg))  # missing, not UTF-8, or empty: exit 4


def calibration_source(
    config: CompileConfig, source: ModelSource, *, samples: int | None = None
) -> tuple[Any, Callable[[np.ndarray], np.ndarray] | None, int | None, str]:
    """(source for CalibrationStream, preprocess, sample count, description); `samples`
    overrides how many the run reads (default: --calib-samples or the zoo's own)."""
    check_calibration(config, source)
    spec = source.zoo_spec
    arg = config.calib_source
    n = samples or calibration_samples(config, source)
    if arg in (None, "zoo"):
        assert spec is not None  # check_calibration refused a non-zoo model without --calib
        count = n if n is not None else spec.default_calib_samples
        return spec.calibration_data(count), None, count, f"zoo:{spec.name} calibration set"
    if arg == "random":
        return random_calibration(config, source, samples or config.calib_samples)
    path = Path(arg)
    if is_text_file(arg):
        sentences = read_sentences(path)[:n]
        return text_tokenizer(spec, "--calib", arg)(sentences), None, len(sentences), str(path)
    preprocess = getattr(spec, "preprocess", None) if path.is_dir() else None
    return str(path), preprocess, n, str(path)


def quant_spec_for(target: Target, device: str | None) -> QuantSpec:
    """The target's spec, with 7-bit weights for a --device whose int8 kernels saturate
    (x86 without VNNI): chosen by the board the artifact is for, not the compiling
    machine, so the same inputs and flags give the same artifact everywhere."""
    spec = target.quant_spec
    if device is not None:
        from targets.profiles import get_profile

        if get_profile(device).int8_saturates:
            return spec.replace(reduce_range=True)
    return spec


#: samples `--calib random` draws when --calib-samples does not say
RANDOM_CALIB_SAMPLES = 64


def random_calibration(
    config: CompileConfig, source: ModelSource, samples: int | None
) -> tuple[dict[str, np.ndarray], None, int, str]:
    """`--calib random`: seeded inputs of the declared shapes and kinds (integer inputs
    below the embedding table they index), drawn with another seed than `--eval random`.
    Ranges calibrated on them fit noise, not data: the report and the terminal say so."""
    infos = graph_inputs(
        source.proto,
        config.input_shape,
        {**source.default_dims, **dict(config.dims)},
        dict(config.input_shapes),
    )
    count = samples or RANDOM_CALIB_SAMPLES
    seed = config.seed + 1
    description = (
        f"random: {random_description(infos, seed)}; not representative of real data, "
        "so the INT8 ranges and the accuracy figures are only indicative"
    )
    log.warning("--calib random: %s", description)
    return random_feeds(infos, count, seed), None, count, description


def run_ptq(
    model: ir.Model,
    config: CompileConfig,
    source: ModelSource,
    target: Target,
    *,
    threads: int,
    progress: Callable[[str, int, int], None],
    static_batch: int | None = None,
) -> tuple[ir.Model, dict[str, Any]]:
    """Quantize the optimized FP32 model for `target`; returns (model, report section)."""
    from passes.quantize import quantize

    data, preprocess, _, description = calibration_source(config, source)
    options = ptq_options(config, source, threads=threads, batch=static_batch)
    model = at_least(model, 13, why="INT8 Q/DQ (per-channel DequantizeLinear)")
    spec = quant_spec_for(target, config.device)
    with pass_errors():
        quantized, summary = quantize(
            model,
            data,
            options,
            spec=spec,
            preprocess=preprocess,
            progress=lambda stage, done, total: progress(stage, done, total or done),
        )
    section = {"calibration_data": description, **summary.to_dict()}
    if spec.reduce_range:
        section["spec"] = f"{section['spec']} (7-bit weights for {config.device})"
    return quantized, section


def run_qat(
    config: CompileConfig,
    source: ModelSource,
    evalset: EvalSet,
    target: Target,
    out_dir: Path,
    threads: int,
    progress: Callable[[str, int, int], None],
) -> tuple[ir.Model, dict[str, Any]]:
    """Quantization-aware training in torch, exported to the same Q/DQ form as PTQ.

    QAT starts from PTQ run with the same `ptq_options` as `run_ptq` (so --calib-method
    and --calib-samples reach it); `CompileConfig` refuses by name the flags it cannot
    follow (--auto-fallback, --sensitivity).
    Checkpoints live in `<out>/qat_checkpoints/` (outside the staging folder) so
    an interrupted run can continue with `--resume`.
    """
    if source.torch_module is None:
        raise UsageError(
            "--qat needs a torch source (a zoo name or module:factory); a plain .onnx "
            "file has no trainable module: use post-training --precision int8 instead"
        )
    if len(evalset.inputs) != 1:
        raise UsageError("--qat supports single-input models")
    options = ptq_options(config, source, threads=threads)
    from passes.qat.stage import run_qat_stage

    with pass_errors():
        model, section = run_qat_stage(
            source.torch_module,  # type: ignore[arg-type]  # a torch source's module is an nn.Module, typed object here
            target.quant_spec,
            train_inputs=training_inputs(config, source),
            train_labels=None,
            eval_inputs=next(iter(evalset.inputs.values())),
            eval_labels=evalset.labels,
            epochs=config.epochs or 2,
            lr=config.lr,
            checkpoint_dir=out_dir / "qat_checkpoints",
            resume=config.resume,
            input_names=source.input_names,
            output_names=[o.name for o in source.proto.graph.output],
            opset=config.opset,
            threads=threads,
            ptq=options,
            status=lambda p: progress(
                f"qat|epoch {p.epoch}/{p.epochs} loss {p.loss:.4f} agreement {p.agreement:.3f}",
                (p.epoch - 1) * p.steps + p.step,
                p.epochs * p.steps,
            ),
        )
    return model, {"method": "qat (distillation from the fp32 model)", **section}


def quantization_records(
    float_model: ir.Model, quantized: ir.Model, section: Mapping[str, Any], seconds: float
) -> list[PassRecord]:
    """Quantization's steps as `report.passes` entries, like every other pass.

    PTQ gives one record per step that ran (`quantize.<step>`, timed by the
    step pipeline): only Q/DQ insertion changes the node count; `changed` says
    whether the step changed the model or the numbers it will carry
    (equalization, rounding, bias correction, insertion), while calibration,
    range search and sensitivity only measure. QAT is one record: training in
    torch, exported to the Q/DQ graph.
    """
    before, after = count_nodes(float_model), count_nodes(quantized)
    if str(section.get("method", "")).startswith("qat"):
        return [PassRecord("QuantizationAwareTraining", True, before, after, seconds)]
    changed = {
        "equalize": section["equalized_pairs"] + section["equalized_streams"] > 0,
        "rounding": section["rounded_layers"] > 0,
        "bias_correction": section["bias_corrected"] > 0,
        "insert_qdq": True,
    }
    return [
        PassRecord(
            f"quantize.{step}",
            changed.get(step, False),
            before,
            after if step == "insert_qdq" else before,
            step_seconds,
        )
        for step, step_seconds in section["seconds"].items()
        if step != "total"
    ]
