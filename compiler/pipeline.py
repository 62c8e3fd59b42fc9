"""The one place stages are ordered:

    load → optimize → prune → quantize / QAT → lower → measure → select → report → gates

Each stage is a small unit in `compiler/stages/` with typed inputs and
outputs; this module only calls them in
order and assembles the `Report`. Everything is built in a staging folder
beside the output directory and moved into place only when the run succeeds,
so a failed or interrupted run leaves no partial artifact behind (the input
model is only ever read).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx_ir as ir

from compiler import __version__, interrupt
from compiler.config import CompileConfig
from compiler.gates import GateResult, judge, junit_xml
from compiler.ground.errors import TargetUnavailable, UsageError
from compiler.ground.io import atomic_write_text, sha256_file
from compiler.machine import machine_info
from compiler.recording import PassRecord
from compiler.report import write_reports
from compiler.report_schema import ArtifactInfo, BaselineInfo, ModelInfo, Report, Seconds
from compiler.sanity import (
    accuracy_warnings,
    calibration_warnings,
    fallback_warnings,
    ignored_flag_warnings,
    warn,
    weights_warnings,
)
from compiler.stages.dynamic import DYNAMIC_CANDIDATE, quant_mode, run_dynamic, wants_dynamic
from compiler.stages.fp16 import run_fp16
from compiler.stages.load import Loaded, load
from compiler.stages.lower import Lowered, lower
from compiler.stages.measure import Measured, measure
from compiler.stages.model_checks import check_custom_domains, check_float32_for_int8
from compiler.stages.optimize import optimize
from compiler.stages.outputs import make_staging, publish
from compiler.stages.progress import Progress, no_progress
from compiler.stages.prune import run_prune
from compiler.stages.quantize import check_calibration, quantization_records, run_ptq, run_qat
from compiler.stages.select import discard_rejected, select_precision
from passes.prune.unstructured import compressed_size
from targets.base import Target
from targets.registry import get_target

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    report: dict[str, Any]
    out_dir: Path
    artifact: Path
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed"))


@dataclass(frozen=True)
class Candidates:
    """The transformed model per precision, what pruning and quantization did, and when."""

    models: dict[str, ir.Model]
    fp32_model: ir.Model
    records: list[PassRecord]
    pruning: dict[str, Any] | None
    quantization: dict[str, Any] | None
    fp16: dict[str, Any] | None
    calibrate_s: float | None
    #: the report's quantization section per INT8 candidate when there are several (auto)
    quant_sections: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_threads() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def _resolve_target(name: str, quant_mode: str | None = None) -> Target:
    """The target by name; a --quant-mode it does not run is a usage error (exit 2) even
    where the target is not installed."""
    try:
        target = get_target(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    if quant_mode is not None and quant_mode not in target.quant_modes:
        raise UsageError(
            f"target {target.name} runs --quant-mode {', '.join(target.quant_modes)}, not "
            f"{quant_mode}; use --target cpu for dynamic INT8"
        )
    reason = target.unavailable_reason()
    if reason:
        raise TargetUnavailable(reason)
    return target


def _check_fits_target(config: CompileConfig, target: Target) -> None:
    """Refuse, before any work, a precision or format the target does not have."""
    refusal = target.precision_refusal(config.precision)
    if refusal:
        raise UsageError(refusal)
    if config.artifact_format is not None and config.artifact_format not in target.formats:
        raise UsageError(
            f"target {target.name} writes {', '.join(target.formats)} artifacts, "
            f"not --format {config.artifact_format}"
        )


def _memory(lowered: Lowered, loaded: Loaded, precision: str, threads: int) -> dict[str, Any]:
    """Peak memory of a fresh process running the chosen artifact on one held-out batch."""
    from compiler.memory import peak_memory_mb

    batch = loaded.static_batch or 1
    feeds = {k: v[:batch] for k, v in loaded.evalset.inputs.items()}
    peak = peak_memory_mb(lowered.artifacts[precision].path, feeds, threads=threads)
    return {
        "peak_rss_mb": peak,
        # what the interpreter, numpy and this onnxruntime build take before any model
        "runtime_rss_mb": peak_memory_mb(None, feeds, threads=threads),
        "method": f"peak RSS of a fresh onnxruntime process ({threads} threads, batch {batch}), "
        "interpreter and runtime included",
    }


def _verify_feeds(loaded: Loaded) -> dict[str, Any]:
    """A few held-out samples (a whole batch where the model fixes one) for --verify."""
    n = loaded.static_batch or 2
    return {k: v[:n] for k, v in loaded.evalset.inputs.items()}


def compile_model(
    config: CompileConfig, progress: Progress | None = None, *, command: str | None = None
) -> CompileResult:
    """Compile, measure, report and judge one model; raises EdgecError subclasses on bad input.

    `command`: the CLI's command line, for report.json's environment and report.html."""
    progress = progress or no_progress
    t0 = time.perf_counter()
    target = _resolve_target(config.target, config.quant_mode)
    _check_fits_target(config, target)
    notes = warn(ignored_flag_warnings(config))
    loaded = load(config, progress)
    check_custom_domains(
        loaded.source.proto, target.name, standard_only=target.fusions == "portable"
    )
    if config.precision == "int8" or (
        config.precision == "auto" and "int8" in target.auto_precisions
    ):
        check_float32_for_int8(loaded.source.proto)
    if config.precision != "fp32" and not config.qat:
        check_calibration(config, loaded.source)
    out_dir = config.out_dir or Path("build") / loaded.source.name
    threads = config.threads or default_threads()
    staging = make_staging(out_dir)
    try:
        cands = transform(config, loaded, target, out_dir, threads, progress)
        notes += warn(calibration_warnings(cands.quantization))
        notes += warn(fallback_warnings(cands.quantization))
        lowered = lower(
            target,
            cands.models,
            cands.fp32_model,
            staging,
            stem=loaded.source.name,
            fmt=config.artifact_format,
            pruned=cands.pruning is not None,
        )
        compile_s = time.perf_counter() - t0
        measured = measure(target, lowered, loaded, config, threads=threads, progress=progress)
        precision, auto = select_precision(
            config.precision, lowered, measured, config.budgets.min_accuracy
        )
        seconds = Seconds(compile_s, cands.calibrate_s, measured.seconds)
        report = build_report(
            loaded, target, cands, lowered, measured, precision, seconds, auto, out_dir
        )
        discard_rejected(lowered, precision)
        if config.budgets.max_memory_mb is not None:
            report = replace(report, memory=_memory(lowered, loaded, precision, threads))
        gates = judge(report.to_dict(), config.budgets)
        unbudgeted = accuracy_warnings(
            measured.accuracies[precision], budgeted=config.budgets.judges_accuracy
        )
        report = replace(
            report,
            gates=tuple(gates),
            warnings=(*report.warnings, *notes, *unbudgeted),
            environment={**(report.environment or {}), "command": command},
        )
        as_dict = report.to_dict()
        chosen, base = lowered.artifacts[precision].path, lowered.baseline.path
        write_reports(
            as_dict,
            staging,
            config.reports,
            measured.latencies[precision].samples_ms,
            baseline_samples_ms=measured.latencies["baseline"].samples_ms,
            baseline_onnx=base if base.suffix == ".onnx" else None,
            artifact_onnx=chosen if chosen.suffix == ".onnx" else None,
            command=command,
        )
        interrupt.check()  # never publish after a Ctrl-C, even a swallowed one
        if config.junit is not None:
            junit = junit_xml(gates, suite=f"edgec.{loaded.source.name}")
            atomic_write_text(config.junit, junit)
        publish(staging, out_dir)
        artifact = out_dir / lowered.artifacts[precision].path.name
        return CompileResult(as_dict, out_dir, artifact, gates)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def transform(
    config: CompileConfig,
    loaded: Loaded,
    target: Target,
    out_dir: Path,
    threads: int,
    progress: Progress,
) -> Candidates:
    """optimize → prune → quantize / QAT: the models to lower, one per candidate precision."""
    source = loaded.source
    progress("passes", 0, 1)
    fp32_model, records = optimize(
        ir.from_proto(source.proto),
        verify=config.verify,
        seed=config.seed,
        fusions=target.fusions,
        # INT8 quantizes the MatMul/Gemm it sees: keep them visible when it may run
        keep_weighted_matmuls=config.precision in ("int8", "auto"),
        feeds=_verify_feeds(loaded),
    )
    progress("passes", 1, 1)
    model, pruning = fp32_model, None
    if config.prune_mode is not None or config.prune_ratio is not None:
        model, outcome = run_prune(
            config, source, loaded.evalset, target.channel_multiple, records, progress, fp32_model
        )
        pruning = outcome.to_dict()
    models: dict[str, ir.Model] = {}
    quantization: dict[str, Any] | None = None
    calibrate_s: float | None = None
    wanted = target.auto_precisions if config.precision == "auto" else (config.precision,)
    if "fp32" in wanted:
        models["fp32"] = model
    if "int8" in wanted and quant_mode(config) == "dynamic":
        t_cal = time.perf_counter()
        models["int8"], quantization = run_dynamic(model, config, source, threads=threads)
        calibrate_s = time.perf_counter() - t_cal
    elif "int8" in wanted:
        t_cal = time.perf_counter()
        if config.qat:
            models["int8"], quantization = run_qat(
                config, source, loaded.evalset, target, out_dir, threads, progress
            )
        else:
            models["int8"], quantization = run_ptq(
                model,
                config,
                source,
                target,
                threads=threads,
                progress=progress,
                static_batch=loaded.static_batch,
            )
        calibrate_s = time.perf_counter() - t_cal
        records += quantization_records(model, models["int8"], quantization, calibrate_s)
    sections: dict[str, dict[str, Any]] = {}
    if wants_dynamic(model, config, target):
        t_cal = time.perf_counter()
        models[DYNAMIC_CANDIDATE], sections[DYNAMIC_CANDIDATE] = run_dynamic(
            model, config, source, threads=threads
        )
        calibrate_s = (calibrate_s or 0.0) + time.perf_counter() - t_cal
        if quantization is not None:
            sections["int8"] = quantization
    fp16: dict[str, Any] | None = None
    if "fp16" in wanted:
        t_cal = time.perf_counter()
        models["fp16"], fp16 = run_fp16(
            model,
            config,
            source,
            threads=threads,
            records=records,
            static_batch=loaded.static_batch,
        )
        calibrate_s = (calibrate_s or 0.0) + time.perf_counter() - t_cal
    return Candidates(
        models, fp32_model, records, pruning, quantization, fp16, calibrate_s, sections
    )


def build_report(
    loaded: Loaded,
    target: Target,
    cands: Candidates,
    lowered: Lowered,
    measured: Measured,
    precision: str,
    seconds: Seconds,
    auto: dict[str, Any] | None,
    out_dir: Path,
) -> Report:
    """The run's facts for `precision`, before the gates judge them."""
    source, artifact = loaded.source, lowered.artifacts[precision]
    latency, base = measured.latencies[precision], measured.latencies["baseline"]
    size = artifact.path.stat().st_size
    return Report(
        edgec_version=__version__,
        model=ModelInfo.of(source.name, source.kind, source.sha256, source.proto),
        target=target.name,
        precision="int8" if precision == DYNAMIC_CANDIDATE else precision,
        passes=tuple(cands.records),
        artifact=ArtifactInfo(
            path=str(out_dir / artifact.path.name),  # where publishing puts it
            format=artifact.format,
            size_bytes=size,
            compressed_size_bytes=compressed_size(artifact.path),
            sha256=sha256_file(artifact.path),
        ),
        baseline=BaselineInfo.compare(
            latency,
            base,
            measured.latencies.get("torch"),
            size_bytes=size,
            base_size_bytes=lowered.baseline.path.stat().st_size,
        ),
        latency=latency,
        accuracy=measured.accuracies[precision],
        accuracy_source=loaded.evalset.source,
        seconds=seconds,
        pruning=cands.pruning,
        quantization=cands.quant_sections.get(precision, cands.quantization),
        fp16=cands.fp16,
        auto=auto,
        warnings=(
            *loaded.warnings,
            *weights_warnings(getattr(source.zoo_spec, "weights_source", None)),
        ),
        environment=machine_info(),
    )


__all__ = ["CompileResult", "compile_model"]
