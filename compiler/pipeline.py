"""The one place stages and passes are ordered: source → passes → lower → measure → report → gates.

Everything is built in a staging folder beside the output directory and moved
into place only when the run succeeds, so a failed or interrupted run leaves no
partial artifact behind (the input model is only ever read).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from compiler import __version__, interrupt
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
from compiler.evaluate import compare_outputs, run_batched
from compiler.gates import GateResult, judge
from compiler.ground.errors import TargetUnavailable, UsageError
from compiler.ground.io import sha256_file
from compiler.report import empty_report, write_reports
from compiler.sources import ModelSource, resolve
from compiler.stages.optimize import optimize
from passes.prune.unstructured import compressed_size
from targets.base import Artifact, Runner, Target, get_target
from targets.cpu import OrtRunner
from targets.latency import LatencyStats, bench_torch, latency_ratio, measure_interleaved

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
    if config.precision == "fp16":
        raise UsageError("--precision fp16 is not available yet; use fp32, int8 or auto")
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
    threads = config.threads or default_threads()
    staging = _make_staging(out_dir)
    try:
        report = empty_report()
        report["edgec_version"] = __version__
        report["model"] = _model_info(source)
        report["target"] = target.name

        progress("passes", 0, 1)
        model, records = optimize(
            ir.from_proto(source.proto), verify=config.verify, seed=config.seed
        )
        fp32_model = model
        progress("passes", 1, 1)
        pruning = None
        from compiler import prune_stage

        if config.prune_mode is not None or config.prune_ratio is not None:
            model, pruning = prune_stage.run_prune(
                config, source, evalset, target.name, records, progress, fp32_model
            )
        report["passes"] = [r.to_dict() for r in records]
        report["pruning"] = pruning.to_dict() if pruning else None

        # Candidates: the transformed model per precision, plus the FP32 baseline.
        calibrate_s = None
        candidates: dict[str, ir.Model] = {}
        if config.precision in ("fp32", "auto"):
            candidates["fp32"] = model
        if config.precision in ("int8", "auto"):
            from compiler import quantize_stage

            t_cal = time.perf_counter()
            if config.qat:
                candidates["int8"], report["quantization"] = quantize_stage.run_qat(
                    config, source, evalset, target, out_dir, threads, progress
                )
            else:
                candidates["int8"], report["quantization"] = quantize_stage.run(
                    model, config, source, target, threads=threads, progress=progress
                )
            calibrate_s = time.perf_counter() - t_cal
        artifacts: dict[str, Artifact] = {
            p: target.lower(m, staging, stem=f"{source.name}.{p}", fmt=config.artifact_format)
            for p, m in candidates.items()
        }
        if "fp32" not in artifacts or pruning is not None:
            # The unpruned FP32 baseline is measured on the same target in the same run.
            base_dir = Path(tempfile.mkdtemp(prefix=".baseline-", dir=staging))
            baseline = target.lower(
                fp32_model, base_dir, stem=f"{source.name}.fp32", fmt=config.artifact_format
            )
        else:
            baseline = artifacts["fp32"]
        compile_s = time.perf_counter() - t0

        t_measure = time.perf_counter()
        reference = reference_outputs(source, evalset, progress, batch=eval_batch)
        feeds = _latency_feeds(evalset, infos, config)
        to_measure = {**artifacts, "baseline": baseline}
        outputs, latencies = _measure(
            target,
            to_measure,
            evalset,
            feeds,
            threads=threads,
            eval_batch=eval_batch,
            torch_module=source.torch_module if config.torch_baseline else None,
            batch=config.batch,
            progress=progress,
        )
        accuracies = {
            name: compare_outputs(reference[0], outputs[name][0], evalset.labels)
            for name in to_measure
        }
        baseline_size = baseline.path.stat().st_size
        precision = config.precision
        if precision == "auto":
            precision, report["auto"] = choose_precision(
                {p: (latencies[p], accuracies[p]) for p in artifacts}, config.budgets.min_accuracy
            )
            for p, art in artifacts.items():
                if p != precision:
                    art.path.unlink()
        report["precision"] = precision
        artifact, latency, accuracy = (
            artifacts[precision],
            latencies[precision],
            accuracies[precision],
        )
        base_latency, torch_latency = latencies["baseline"], latencies.get("torch")
        report["artifact"] = {
            "path": str(out_dir / artifact.path.name),
            "format": artifact.format,
            "size_bytes": artifact.path.stat().st_size,
            "compressed_size_bytes": compressed_size(artifact.path),
            "sha256": sha256_file(artifact.path),
        }
        report["latency_ms"] = latency.to_dict()
        report["accuracy"] = {**accuracy.to_dict(), "source": evalset.source}
        report["baseline"] = {
            "precision": "fp32",
            "size_bytes": baseline_size,
            "latency_ms": base_latency.to_dict()["p50"],
            # paired per round (targets.latency.latency_ratio): robust to machine drift
            "speedup": round(1 / latency_ratio(latency, base_latency), 4),
            "latency_ratio": round(latency_ratio(latency, base_latency), 4),
            "size_ratio": round(artifact.path.stat().st_size / baseline_size, 4),
            "torch_latency_ms": torch_latency.to_dict()["p50"] if torch_latency else None,
            "speedup_vs_torch": round(torch_latency.p50 / latency.p50, 4)
            if torch_latency
            else None,
        }
        report["seconds"] = {
            "compile": round(compile_s, 3),
            "calibrate": round(calibrate_s, 3) if calibrate_s is not None else None,
            "measure": round(time.perf_counter() - t_measure, 3),
        }
        gates = judge(report, config.budgets)
        report["gates"] = [g.to_dict() for g in gates]
        report["passed"] = all(g.passed for g in gates)
        write_reports(report, staging, config.reports, latency.samples_ms)
        interrupt.check()  # never publish after a Ctrl-C, even a swallowed one
        if config.junit is not None:
            from compiler.gates import junit_xml
            from compiler.ground.io import atomic_write_text

            atomic_write_text(config.junit, junit_xml(gates, suite=f"edgec.{source.name}"))
        _publish(staging, out_dir)
        return CompileResult(report, out_dir, out_dir / artifact.path.name, gates)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _measure(
    target: Target,
    artifacts: dict[str, Artifact],
    evalset: EvalSet,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    eval_batch: int,
    torch_module: Any,
    batch: int,
    progress: Progress,
) -> tuple[dict[str, list[np.ndarray]], dict[str, LatencyStats]]:
    """Evaluate every artifact on the held-out set, then time them (and torch) interleaved."""
    outputs: dict[str, list[np.ndarray]] = {}
    contenders: dict[str, Callable[[], object]] = {}
    with contextlib.ExitStack() as stack:
        runners: dict[Path, Any] = {}
        for name, art in artifacts.items():
            if art.path not in runners:
                runners[art.path] = stack.enter_context(target.runner(art.path, threads=threads))
                runner = runners[art.path]
                outputs[name] = run_batched(
                    runner,
                    evalset.inputs,
                    eval_batch,
                    progress=functools.partial(progress, f"eval {name}"),
                )
                contenders[name] = functools.partial(runner.infer, feeds)
        # the same file twice (fp32 run: artifact is the baseline) is measured once
        for name, art in artifacts.items():
            if name not in outputs:
                twin = next(n for n, a in artifacts.items() if a.path == art.path and n in outputs)
                outputs[name] = outputs[twin]
        latencies = measure_contenders(
            contenders, torch_module, feeds, threads=threads, batch=batch, progress=progress
        )
    for name, art in artifacts.items():
        if name not in latencies:
            twin = next(n for n, a in artifacts.items() if a.path == art.path and n in latencies)
            latencies[name] = latencies[twin]
    return outputs, latencies


def choose_precision(
    candidates: dict[str, tuple[LatencyStats, Any]], min_accuracy: float | None
) -> tuple[str, dict[str, Any]]:
    """`--precision auto`: the fastest candidate whose accuracy meets the budget.

    The budget is `--min-accuracy` when given. Without it: label accuracy within
    one point of the FP32 artifact's, top-1 agreement with the FP32 original
    ≥ 0.99, or cosine ≥ 0.999 for outputs that are not class scores. FP32 always
    qualifies, so there is always an answer.
    """
    from compiler.gates import accuracy_metric

    fp32_value = (
        accuracy_metric(candidates["fp32"][1].to_dict())[1] if "fp32" in candidates else None
    )
    fp32_latency = candidates["fp32"][0] if "fp32" in candidates else None
    rows = []
    for p, (lat, acc) in candidates.items():
        metric, value = accuracy_metric(acc.to_dict())
        if min_accuracy is not None:
            limit = min_accuracy
        elif metric == "top1_accuracy" and fp32_value is not None:
            limit = round(fp32_value - 0.01, 4)
        else:
            limit = 0.999 if metric == "cosine" else 0.99
        meets = p == "fp32" or (value is not None and value >= limit)
        rows.append(
            {
                "precision": p,
                "p50_ms": lat.to_dict()["p50"],
                "latency_vs_fp32": None
                if fp32_latency is None
                else round(latency_ratio(lat, fp32_latency), 4),
                "metric": metric,
                "value": value,
                "limit": limit,
                "meets_budget": meets,
            }
        )
    eligible = [r for r in rows if r["meets_budget"]]
    best = min(eligible, key=lambda r: r["latency_vs_fp32"] or r["p50_ms"])
    return best["precision"], {"chosen": best["precision"], "candidates": rows}


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


class _TorchReference:
    """The torch module as a Runner (eager, inference mode)."""

    def __init__(self, module: Any, input_names: list[str]) -> None:
        self.module = module
        self.input_names = input_names

    def __enter__(self) -> _TorchReference:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
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
        ref: Runner = _TorchReference(source.torch_module, source.input_names)
    else:
        ref = OrtRunner(source.proto.SerializeToString(), level="none")
    with ref as runner:
        return run_batched(
            runner,
            evalset.inputs,
            batch,
            progress=functools.partial(progress, "reference"),
        )


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
    """Latency of the onnxruntime contenders in alternating rounds, then torch eager.

    Torch is timed in its own block, not interleaved: its OpenMP workers keep
    spinning for a while after each call (and onnxruntime's do too), so
    alternating the two runtimes call by call measures their contention, not
    their speed.
    """
    latencies = measure_interleaved(
        contenders,
        batch=batch,
        threads=threads,
        progress=lambda done, total: progress("latency", done, total),
    )
    if torch_module is not None and len(feeds) == 1:
        import torch

        example = torch.from_numpy(next(iter(feeds.values())))
        with contextlib.suppress(Exception):
            latencies["torch"] = bench_torch(torch_module, example, threads, batch=batch)
    return latencies


__all__ = ["CompileResult", "compile_model"]
