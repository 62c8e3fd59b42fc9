"""The one place stages and passes are ordered: source → passes → lower → measure → report → gates.

Everything is built in a staging folder beside the output directory and moved
into place only when the run succeeds, so a failed or interrupted run leaves no
partial artifact behind (the input model is only ever read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes as irp

from compiler import __version__
from compiler.config import CompileConfig
from compiler.data import (
    EvalSet,
    InputInfo,
    evaluation_set,
    fixed_batch,
    graph_inputs,
    random_feeds,
    whole_batches,
)
from compiler.errors import InvalidInput, TargetUnavailable, UsageError
from compiler.evaluate import compare_outputs
from compiler.gates import GateResult, judge
from compiler.io import sha256_file
from compiler.recording import PassRecord, RecordingPass
from compiler.report import empty_report, write_reports
from compiler.sources import ModelSource, resolve
from passes.prune.unstructured import compressed_size
from targets.base import Target, get_target
from targets.latency import LatencyStats, measure_interleaved

log = logging.getLogger(__name__)

#: progress(stage, done, total): the CLI draws bars from it; the library never prints.
Progress = Callable[[str, int, int], None]

EVAL_BATCH = 16


@dataclass
class CompileResult:
    report: dict[str, Any]
    out_dir: Path
    artifact: Path
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed"))


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def default_threads() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def build_passes() -> list[irp.PassBase]:
    """Cleanup, then fusions, then cleanup again to sweep what fusions left."""
    from passes.cleanup import cleanup_passes
    from passes.fusion import fusion_passes

    return [*cleanup_passes(), *fusion_passes(), *cleanup_passes()]


def optimize(
    model: ir.Model, *, verify: bool = False, seed: int = 0
) -> tuple[ir.Model, list[PassRecord]]:
    """Run cleanup and fusion under onnx-ir's PassManager, recording each pass."""
    records: list[PassRecord] = []
    verifier = _verifier(seed) if verify else None
    wrapped = [RecordingPass(p, records, verifier=verifier) for p in build_passes()]
    result = irp.PassManager(wrapped, steps=1)(model)
    return result.model, records


def _verifier(seed: int) -> Callable[[ir.Model, ir.Model, str], float]:
    from passes.verify import check_equivalent

    def verify(before: ir.Model, after: ir.Model, name: str) -> float:
        try:
            return float(check_equivalent(before, after, seed=seed))
        except AssertionError as e:
            raise InvalidInput(f"--verify: pass {name} changed the model's function: {e}") from None

    return verify


def _resolve_target(name: str) -> Target:
    try:
        target = get_target(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    reason = target.unavailable_reason()
    if reason:
        raise TargetUnavailable(reason)
    return target


def compile_model(config: CompileConfig, progress: Progress | None = None) -> CompileResult:
    """Compile, measure, report and judge one model; raises EdgecError subclasses on bad input."""
    progress = progress or _no_progress
    t0 = time.perf_counter()
    target = _resolve_target(config.target)
    if config.precision in ("fp16", "int8", "auto"):
        raise UsageError(f"--precision {config.precision} is not available yet; use fp32")
    progress("load", 0, 1)
    source = resolve(config.model, input_shape=config.input_shape, opset=config.opset)
    progress("load", 1, 1)
    infos = graph_inputs(source.proto, config.input_shape)
    # a model exported with a static batch takes exactly that many samples per run
    static_batch = fixed_batch(source.proto, config.batch)
    eval_batch = static_batch or EVAL_BATCH
    evalset = evaluation_set(
        infos,
        zoo_spec=source.zoo_spec,
        eval_arg=config.eval_source,
        samples=config.eval_samples,
        seed=config.seed,
    )
    evalset = whole_batches(evalset, eval_batch) if static_batch else evalset
    out_dir = config.out_dir or Path("build") / source.name
    staging = _make_staging(out_dir)
    try:
        report = empty_report()
        report["edgec_version"] = __version__
        report["model"] = _model_info(source)
        report["target"] = target.name
        report["precision"] = config.precision

        progress("passes", 0, 1)
        model, records = optimize(
            ir.from_proto(source.proto), verify=config.verify, seed=config.seed
        )
        fp32_model = model
        progress("passes", 1, 1)
        pruning = None
        if config.prune_mode is not None or config.prune_ratio is not None:
            model, pruning = _prune(
                config, source, evalset, target.name, records, progress, fp32_model
            )
        report["passes"] = [r.to_dict() for r in records]
        report["pruning"] = pruning.to_dict() if pruning else None

        stem = f"{source.name}.{config.precision}"
        artifact = target.lower(model, staging, stem=stem, fmt=config.artifact_format)
        baseline_artifact = artifact
        if config.precision != "fp32" or pruning is not None:
            # The FP32 baseline is measured on the same target in the same run.
            base_dir = Path(tempfile.mkdtemp(prefix=".baseline-", dir=staging))
            baseline_artifact = target.lower(
                fp32_model, base_dir, stem=f"{source.name}.fp32", fmt=config.artifact_format
            )
        compile_s = time.perf_counter() - t0

        t_measure = time.perf_counter()
        threads = config.threads or default_threads()
        reference = reference_outputs(source, evalset, progress, batch=eval_batch)
        feeds = _latency_feeds(evalset, infos, config)
        with contextlib.ExitStack() as stack:
            runner = stack.enter_context(target.runner(artifact.path, threads=threads))
            candidate = run_in_batches(
                runner, evalset.inputs, progress, stage="evaluate", batch=eval_batch
            )
            contenders: dict[str, Callable[[], object]] = {"artifact": lambda: runner.infer(feeds)}
            if baseline_artifact is not artifact:
                base_runner = stack.enter_context(
                    target.runner(baseline_artifact.path, threads=threads)
                )
                contenders["fp32"] = lambda: base_runner.infer(feeds)
            torch_module = source.torch_module if config.torch_baseline else None
            latencies = measure_contenders(
                contenders,
                torch_module,
                feeds,
                threads=threads,
                batch=config.batch,
                progress=progress,
            )
        latency = latencies["artifact"]
        base_latency = latencies.get("fp32", latency)
        torch_latency = latencies.get("torch")
        accuracy = compare_outputs(reference[0], candidate[0], evalset.labels)
        size = artifact.path.stat().st_size
        report["artifact"] = {
            "path": str(out_dir / artifact.path.name),
            "format": artifact.format,
            "size_bytes": size,
            "compressed_size_bytes": compressed_size(artifact.path),
            "sha256": sha256_file(artifact.path),
        }
        report["latency_ms"] = latency.to_dict()
        report["accuracy"] = {**accuracy.to_dict(), "source": evalset.source}
        report["baseline"] = {
            "precision": "fp32",
            "size_bytes": baseline_artifact.path.stat().st_size,
            "latency_ms": base_latency.to_dict()["p50"],
            "speedup": round(base_latency.p50 / latency.p50, 4),
            "torch_latency_ms": torch_latency.to_dict()["p50"] if torch_latency else None,
            "speedup_vs_torch": round(torch_latency.p50 / latency.p50, 4)
            if torch_latency
            else None,
        }
        report["seconds"] = {
            "compile": round(compile_s, 3),
            "calibrate": None,
            "measure": round(time.perf_counter() - t_measure, 3),
        }
        gates = judge(report, config.budgets)
        report["gates"] = [g.to_dict() for g in gates]
        report["passed"] = all(g.passed for g in gates)
        write_reports(report, staging, config.reports, latency.samples_ms)
        if config.junit is not None:
            from compiler.gates import junit_xml
            from compiler.io import atomic_write_text

            atomic_write_text(config.junit, junit_xml(gates, suite=f"edgec.{source.name}"))
        _publish(staging, out_dir)
        return CompileResult(report, out_dir, out_dir / artifact.path.name, gates)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune(
    config: CompileConfig,
    source: ModelSource,
    evalset: EvalSet,
    target_name: str,
    records: list[PassRecord],
    progress: Progress,
    fp32_model: ir.Model,
) -> tuple[ir.Model, Any]:
    """Prune the optimized graph (after torch fine-tuning when asked)."""
    from compiler import prune_stage

    mode = config.prune_mode or "unstructured"
    round_to = prune_stage.CHANNEL_MULTIPLE.get(target_name, 8)
    finetune = None
    if config.finetune_epochs:
        if source.torch_module is None or len(evalset.inputs) != 1:
            raise UsageError(
                "--finetune-epochs needs a single-input torch source (zoo name or module:factory)"
            )
        train = _training_inputs(config, source)
        module, finetune = prune_stage.finetune_torch(
            source.torch_module,
            float(config.prune_ratio or 0.0),
            epochs=config.finetune_epochs,
            train_inputs=train,
            eval_inputs=next(iter(evalset.inputs.values())),
            eval_labels=evalset.labels,
            round_to=round_to,
            progress=progress,
        )
        from compiler.export import export_torch

        proto = export_torch(
            module,
            [next(iter(evalset.inputs.values()))[:1]],
            input_names=source.input_names,
            output_names=[o.name for o in source.proto.graph.output],
            opset=config.opset,
        )
        model, _ = optimize(ir.from_proto(proto), verify=config.verify, seed=config.seed)
    else:
        model = ir.from_proto(ir.to_proto(fp32_model))  # keep the unpruned baseline intact
    model, outcome = prune_stage.prune_graph(
        model, mode, config.prune_ratio, round_to=round_to, records=records
    )
    outcome.finetune = finetune
    return model, outcome


def _training_inputs(config: CompileConfig, source: ModelSource) -> np.ndarray:
    """Unlabeled training data for fine-tuning: the calibration side of the zoo, or --calib."""
    spec = source.zoo_spec
    if config.calib_source not in (None, "zoo"):
        from compiler.data import graph_inputs, load_arrays, validate_arrays

        infos = graph_inputs(source.proto, config.input_shape)
        data, _ = load_arrays(Path(config.calib_source), infos)
        validate_arrays(data, infos, what="training data")
        return next(iter(data.values()))
    if spec is None:
        raise UsageError(
            "--finetune-epochs on a module:factory source needs --calib PATH (.npy/.npz)"
        )
    return spec.calibration_data(config.calib_samples or spec.default_calib_samples)  # type: ignore[attr-defined]


def _make_staging(out_dir: Path) -> Path:
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} exists and is not a directory")
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.edgec-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}; choose another --out") from None


def _publish(staging: Path, out_dir: Path) -> None:
    """Move every staged file into out_dir (same filesystem: each move is atomic)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(staging.iterdir()):
            if f.is_file():  # private working folders (e.g. the fp32 baseline) stay behind
                os.replace(f, out_dir / f.name)
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}; choose another --out") from None


def _model_info(source: ModelSource) -> dict[str, Any]:
    g = source.proto.graph
    params = int(sum(int(np.prod(t.dims)) for t in g.initializer))
    opset = next(
        (o.version for o in source.proto.opset_import if o.domain in ("", "ai.onnx")), None
    )
    return {
        "name": source.name,
        "source": source.kind,
        "sha256": source.sha256,
        "params": params,
        "opset": opset,
        "nodes": len(g.node),
    }


def run_in_batches(
    runner: Any,
    inputs: dict[str, np.ndarray],
    progress: Progress,
    *,
    stage: str,
    batch: int = EVAL_BATCH,
) -> list[np.ndarray]:
    """Stream a data set through a runner; concatenate each output over batches."""
    n = int(next(iter(inputs.values())).shape[0])
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        feeds = {k: v[start : start + batch] for k, v in inputs.items()}
        chunks.append([np.asarray(o) for o in runner.infer(feeds)])
        progress(stage, min(n, start + batch), n)
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


class _OrtReference:
    """The FP32 original run by onnxruntime with graph optimizations off."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), so, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InvalidInput(f"onnxruntime cannot load the model: {first}") from None

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)


class _TorchReference:
    def __init__(self, module: Any, input_names: list[str]) -> None:
        self.module = module
        self.input_names = input_names

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        outs = out if isinstance(out, list | tuple) else [out]
        return [o.numpy() for o in outs]


def reference_outputs(
    source: ModelSource, evalset: EvalSet, progress: Progress, *, batch: int = EVAL_BATCH
) -> list[np.ndarray]:
    """FP32 original outputs: the torch module when there is one, else the ONNX file via ORT."""
    if source.torch_module is not None:
        ref: Any = _TorchReference(source.torch_module, source.input_names)
    else:
        ref = _OrtReference(source.proto)
    return run_in_batches(ref, evalset.inputs, progress, stage="reference", batch=batch)


def _latency_feeds(
    evalset: EvalSet, infos: list[InputInfo], config: CompileConfig
) -> dict[str, np.ndarray]:
    """Real samples for latency when there are enough, else seeded random ones."""
    if evalset.samples >= config.batch:
        return {k: np.ascontiguousarray(v[: config.batch]) for k, v in evalset.inputs.items()}
    return random_feeds(infos, config.batch, config.seed)


def measure_contenders(
    contenders: dict[str, Callable[[], object]],
    torch_module: Any,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    batch: int,
    progress: Progress,
) -> dict[str, LatencyStats]:
    """Latency of the artifact, its FP32 baseline and torch eager, in alternating rounds."""
    fns = dict(contenders)
    torch_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if torch_module is not None and len(feeds) == 1:
        import torch

        example = torch.from_numpy(next(iter(feeds.values())))
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch_ctx = contextlib.ExitStack()
        torch_ctx.callback(torch.set_num_threads, previous)  # type: ignore[attr-defined]
        torch_ctx.enter_context(torch.inference_mode())  # type: ignore[attr-defined]
        torch_module.eval()
        fns["torch"] = lambda: torch_module(example)
    with torch_ctx:
        return measure_interleaved(
            fns,
            batch=batch,
            threads=threads,
            progress=lambda done, total: progress("latency", done, total),
        )


__all__ = ["CompileResult", "compile_model", "optimize", "build_passes", "replace"]
