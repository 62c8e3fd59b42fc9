"""The measure stage: accuracy against the FP32 original and latency against the FP32 baseline.

Every artifact is run on the held-out set; the reference is the torch module
for zoo and factory sources, else the input ONNX file run by onnxruntime with
graph optimizations off. Latency of the artifacts and the baseline is taken in
alternating rounds in one process (`targets.latency.measure_interleaved`), so
the report's speedup is a paired ratio, not an absolute claim.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.config import CompileConfig
from compiler.data import EvalSet, InputInfo, random_feeds
from compiler.evaluate import Accuracy, compare_all, run_batched
from compiler.sources import ModelSource
from compiler.stages.load import Loaded
from compiler.stages.lower import Lowered
from compiler.stages.progress import Progress
from targets.base import Artifact, Runner, Target
from targets.cpu import OrtRunner
from targets.latency import LatencyStats, bench_torch, measure_interleaved, timed_call


@dataclass(frozen=True)
class Measured:
    """Per candidate precision (and "baseline", and "torch" when timed): latency and accuracy."""

    latencies: dict[str, LatencyStats]
    accuracies: dict[str, Accuracy]
    seconds: float


def measure(
    target: Target,
    lowered: Lowered,
    loaded: Loaded,
    config: CompileConfig,
    *,
    threads: int,
    progress: Progress,
) -> Measured:
    """Evaluate and time every artifact and the baseline; compare each with the original."""
    t0 = time.perf_counter()
    source, evalset = loaded.source, loaded.evalset
    reference = reference_outputs(source, evalset, progress, batch=loaded.eval_batch)
    feeds = _latency_feeds(evalset, loaded.inputs, config)
    to_measure = {**lowered.artifacts, "baseline": lowered.baseline}
    outputs, latencies = _run_and_time(
        target,
        to_measure,
        evalset,
        feeds,
        threads=threads,
        eval_batch=loaded.eval_batch,
        torch_module=source.torch_module if config.torch_baseline else None,
        batch=config.batch,
        progress=progress,
    )
    # a zoo model says whether its outputs are class scores (an embedding's are not)
    scores = source.zoo_spec.class_scores if source.zoo_spec is not None else True
    names = [o.name for o in source.proto.graph.output]
    judged = names.index(config.output) if config.output else 0
    accuracies = {
        name: compare_all(
            reference,
            outputs[name],
            names,
            judged=judged,
            labels=evalset.labels,
            class_scores=scores,
        )
        for name in to_measure
    }
    return Measured(latencies, accuracies, time.perf_counter() - t0)


def _run_and_time(
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
    """Evaluate every artifact on the held-out set, time them interleaved, then torch
    eager on its own once their sessions are closed."""
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
                # cast once (a float16 graph takes float16 data), not inside the timed call
                cast = getattr(runner, "cast_feeds", dict)
                contenders[name] = timed_call(runner, cast(feeds))
        # the same file twice (fp32 run: artifact is the baseline) is measured once
        for name, art in artifacts.items():
            if name not in outputs:
                twin = next(n for n, a in artifacts.items() if a.path == art.path and n in outputs)
                outputs[name] = outputs[twin]
        latencies = measure_interleaved(
            contenders,
            batch=batch,
            threads=threads,
            progress=lambda done, total: progress("latency", done, total),
        )
    # torch after the onnxruntime sessions are closed: see `measure_torch`
    torch_latency = measure_torch(
        torch_module, feeds, threads=threads, batch=batch, progress=progress
    )
    if torch_latency is not None:
        latencies["torch"] = torch_latency
    for name, art in artifacts.items():
        if name not in latencies:
            twin = next(n for n, a in artifacts.items() if a.path == art.path and n in latencies)
            latencies[name] = latencies[twin]
    return outputs, latencies


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
    source: ModelSource, evalset: EvalSet, progress: Progress, *, batch: int
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


#: untimed torch eager calls before timing (the onnxruntime contenders get the same)
TORCH_WARMUP = 10
#: the most timed torch eager calls (measure_latency stops earlier once the median holds)
TORCH_MAX_ITERATIONS = 2000


def measure_torch(
    torch_module: Any,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    batch: int,
    progress: Progress,
) -> LatencyStats | None:
    """Latency of torch eager on the latency feeds, comparable with the onnxruntime runs:
    the same `threads` (torch.set_num_threads, restored after), `TORCH_WARMUP` untimed
    calls, `torch.inference_mode()`, the module in eval mode (`bench_torch`).

    Torch is timed in its own block after every onnxruntime session is closed, never
    interleaved or beside live sessions: both runtimes' worker threads keep spinning
    after a call, and torch's OpenMP pool competing with onnxruntime's measured its
    contention (digits_cnn's torch baseline read 0.13-0.22 ms in some runs and
    100-104 ms in others). The settings go into the report (`baseline.torch_threads`,
    `baseline.torch_warmup`). None: no torch module, or more than one input.
    """
    if torch_module is None or len(feeds) != 1:
        return None
    import torch

    example = torch.from_numpy(next(iter(feeds.values())))
    try:
        stats = bench_torch(
            torch_module,
            example,
            threads,
            batch=batch,
            warmup=TORCH_WARMUP,
            max_iterations=TORCH_MAX_ITERATIONS,
            progress=lambda n: progress("torch", n, TORCH_MAX_ITERATIONS),
        )
    except Exception:  # a module that runs in the exporter but not here: no baseline
        return None
    progress("torch", TORCH_MAX_ITERATIONS, TORCH_MAX_ITERATIONS)
    return stats
