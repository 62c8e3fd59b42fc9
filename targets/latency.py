"""Latency measurement: warm-up, then rounds of timed calls until the median is stable.

The stopping rule, exactly: after `warmup` untimed calls, calls are timed one
by one with `perf_counter_ns` in rounds of `window = max(1, min_iterations // 2)`.
After each round, once at least `min_iterations` samples and two rounds exist,
the median of the latest round is compared with the median of the round before;
measurement stops when they differ by less than `rel_tol` (relative to the
earlier one). It also stops at `max_iterations` samples, or when `max_seconds`
(counted from the start of warm-up) have passed — but never before
`warmup + min_iterations` calls, so a slow model takes longer than `max_seconds`
rather than being reported from a handful of samples.

The statistics cover every timed sample, not only the last window. No timing
is ever asserted in tests: only orderings and counts.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from compiler.ground.timing import alternating_blocks

if TYPE_CHECKING:
    import torch

    from targets.base import Runner

logger = logging.getLogger(__name__)


def _round_sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant figures: 12.3456 → 12.35, 0.0123456 → 0.01235."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over `iterations` timed calls of `batch` samples.

    `threads` is what was asked for (None: the runtime's default). `samples_ms`
    keeps every timed call for plots; `to_dict` leaves it out.
    """

    batch: int
    threads: int | None
    warmup: int
    iterations: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput_per_s: float
    samples_ms: tuple[float, ...] = field(repr=False)
    block_size: int = 0  # >0: samples_ms holds blocks of this many calls, one per round

    @classmethod
    def from_samples(
        cls,
        samples_ms: tuple[float, ...],
        *,
        batch: int,
        threads: int | None,
        warmup: int,
        block_size: int = 0,
    ) -> LatencyStats:
        if not samples_ms:
            raise ValueError("no latency samples")
        p50, p90, p99 = (float(v) for v in np.percentile(samples_ms, [50, 90, 99]))
        mean = float(np.mean(samples_ms))
        throughput = batch * 1000.0 / mean if mean > 0 else math.inf
        return cls(
            batch=batch,
            threads=threads,
            warmup=warmup,
            iterations=len(samples_ms),
            p50=p50,
            p90=p90,
            p99=p99,
            mean=mean,
            throughput_per_s=throughput,
            samples_ms=tuple(samples_ms),
            block_size=block_size,
        )

    def block_medians(self) -> list[float]:
        """Median of each round's block (empty unless measured by `measure_interleaved`)."""
        n = self.block_size
        if n <= 0:
            return []
        s = self.samples_ms
        return [float(np.median(s[i : i + n])) for i in range(0, len(s) - n + 1, n)]

    def to_dict(self) -> dict[str, Any]:
        """The report's `latency_ms` object; times and throughput to 4 significant figures."""
        return {
            "batch": self.batch,
            "threads": self.threads,
            "warmup": self.warmup,
            "iterations": self.iterations,
            "p50": _round_sig(self.p50),
            "p90": _round_sig(self.p90),
            "p99": _round_sig(self.p99),
            "mean": _round_sig(self.mean),
            "throughput_per_s": _round_sig(self.throughput_per_s)
            if math.isfinite(self.throughput_per_s)
            else None,
        }


def measure_latency(
    fn: Callable[[], object],
    *,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    min_iterations: int = 30,
    max_iterations: int = 2000,
    max_seconds: float = 10.0,
    rel_tol: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> LatencyStats:
    """Time `fn()` until its median is stable (see the module docstring for the rule).

    `batch` and `threads` only label the result (throughput = batch / mean).
    `progress(n)` is called after each round with the number of timed calls so
    far, outside the timed region.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    if warmup < 0:
        raise ValueError(f"warmup must be 0 or more (got {warmup})")
    if not 1 <= min_iterations <= max_iterations:
        raise ValueError(
            f"need 1 <= min_iterations <= max_iterations (got {min_iterations}, {max_iterations})"
        )
    if not max_seconds > 0 or not rel_tol > 0:
        raise ValueError(f"max_seconds and rel_tol must be positive ({max_seconds}, {rel_tol})")

    clock = time.perf_counter_ns
    deadline = clock() + int(max_seconds * 1e9)
    for _ in range(warmup):
        fn()

    window = max(1, min_iterations // 2)
    samples: list[int] = []
    stop = "max_iterations"
    while len(samples) < max_iterations:
        for _ in range(min(window, max_iterations - len(samples))):
            start = clock()
            fn()
            end = clock()
            samples.append(end - start)
            if end >= deadline and len(samples) >= min_iterations:
                break
        if progress is not None:
            progress(len(samples))
        n = len(samples)
        if n < min_iterations:
            continue
        if clock() >= deadline:
            stop = "max_seconds"
            break
        if n >= 2 * window:
            last = statistics.median(samples[-window:])
            before = statistics.median(samples[-2 * window : -window])
            if abs(last - before) < rel_tol * before or last == before:
                stop = "stable"
                break
    logger.debug("latency: %d iterations, stopped by %s", len(samples), stop)
    return LatencyStats.from_samples(
        tuple(s / 1e6 for s in samples), batch=batch, threads=threads, warmup=warmup
    )


def compare(baseline: LatencyStats, other: LatencyStats) -> float:
    """Speedup of `other` over `baseline`: baseline p50 / other p50 (> 1 means faster)."""
    if other.p50 <= 0:
        raise ValueError("cannot compare against a zero median latency")
    return baseline.p50 / other.p50


@runtime_checkable
class BoundRunner(Protocol):
    """A runner that can prepare a device-resident call for timing (the CUDA runner).

    `bound_call(feeds)` copies `feeds` to the device once and returns a call that
    runs the model on them and leaves the outputs on the device: what is timed is
    the kernels, not host-device copies.
    """

    def bound_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]: ...


def timed_call(runner: Runner, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
    """What to time for `runner` on `feeds`: its bound call when it has one, else `infer(feeds)`.

    The runner must be active. Runners without `bound_call` (the CPU target's)
    are timed exactly as before: `runner.infer(feeds)`, outputs copied out.
    """
    if isinstance(runner, BoundRunner):
        return runner.bound_call(feeds)
    feeds = dict(feeds)
    return lambda: runner.infer(feeds)


def bench_runner(
    runner: Runner,
    feeds: Mapping[str, np.ndarray],
    *,
    batch: int | None = None,
    threads: int | None = None,
    **measure: Any,
) -> LatencyStats:
    """Latency of `timed_call(runner, feeds)`; the runner must be active (inside its `with`).

    `batch` defaults to the leading dimension of the first feed, `threads` to the
    runner's own `threads` attribute; other keywords go to `measure_latency`.
    """
    if batch is None:
        first = next(iter(feeds.values()), None)
        batch = int(first.shape[0]) if first is not None and first.ndim >= 1 else 1
    if threads is None:
        threads = getattr(runner, "threads", None)
    return measure_latency(timed_call(runner, feeds), batch=batch, threads=threads, **measure)


def bench_torch(
    module: torch.nn.Module,
    example: torch.Tensor,
    threads: int | None,
    *,
    batch: int | None = None,
    **measure: Any,
) -> LatencyStats:
    """Latency of torch eager `module(example)` in this process, for the report's comparison.

    Runs under `torch.inference_mode()` with the module in eval mode and
    `torch.set_num_threads(threads)`; the thread count and the module's
    training flag are restored afterwards. Pass the same `threads` as the
    onnxruntime runner: the two runtimes' defaults differ.
    """
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (got {threads})")
    if batch is None:
        batch = int(example.shape[0]) if example.dim() >= 1 else 1
    previous_threads = torch.get_num_threads()
    was_training = module.training
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        module.eval()
        with torch.inference_mode():
            return measure_latency(lambda: module(example), batch=batch, threads=threads, **measure)
    finally:
        torch.set_num_threads(previous_threads)
        module.train(was_training)


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    batch: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    round_size: int = 10,
    min_rounds: int = 3,
    max_rounds: int = 40,
    max_seconds: float = 30.0,
    rel_tol: float = 0.02,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time several candidates in alternating rounds, so machine noise hits them alike.

    A speedup is only meaningful as a ratio measured under the same conditions:
    each round times `round_size` calls of every candidate in turn, after one
    untimed call: onnxruntime's (and OpenMP's) worker threads keep spinning for a
    while after a call, so the first call after switching candidates competes
    with the previous candidate's threads. (Alternating call by call measured
    MobileNetV2 FP32 at 15-20 ms instead of 6.8 ms on 2 cores.) The order rotates
    every round (two copies of one model then measure within 1%). Stops when
    every candidate's median changed less than `rel_tol` over the last round
    (after `min_rounds`), or at `max_rounds` / `max_seconds`.

    `progress(done, total)` counts blocks (one candidate's warm-up, or one
    candidate's calls in one round; total: the most there can be), called after
    each one and once more with done == total at the end, outside the timed region.
    """
    if not fns:
        return {}
    blocks = len(fns) * (1 + max_rounds)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, blocks)

    deadline = time.perf_counter_ns() + int(max_seconds * 1e9)
    medians: dict[str, float] = {}

    def converged(rounds: int, so_far: Mapping[str, list[list[int]]]) -> bool:
        stable = True
        for name, times in so_far.items():
            m = statistics.median(t for b in times for t in b)
            if name not in medians or abs(m - medians[name]) >= rel_tol * medians[name]:
                stable = False
            medians[name] = m
        return rounds >= min_rounds and (stable or time.perf_counter_ns() >= deadline)

    timed = alternating_blocks(
        fns,
        block=round_size,
        max_rounds=max_rounds,
        warmup=warmup,
        stop=converged,
        on_block=tick,
    )
    if progress is not None:
        progress(blocks, blocks)
    samples = {name: [t for b in times for t in b] for name, times in timed.items()}
    return {
        name: LatencyStats.from_samples(
            tuple(s / 1e6 for s in ss),
            batch=batch,
            threads=threads,
            warmup=warmup,
            block_size=round_size,
        )
        for name, ss in samples.items()
    }


def latency_ratio(stats: LatencyStats, baseline: LatencyStats) -> float:
    """`stats` / `baseline` latency: the median over rounds of the ratio of the two
    block medians of the same round, when both come from one `measure_interleaved`
    call; else the ratio of the p50s.

    Why paired: this machine's speed changes for minutes at a time (other tenants;
    MobileNetV2 FP32 moved between 4.6 and 6.8 ms while its INT8 stayed at 3.0 ms),
    and a ratio of two overall medians mixes those states in different proportions.
    Blocks of the same round run seconds apart, in the same state.
    """
    a, b = stats.block_medians(), baseline.block_medians()
    if a and len(a) == len(b):
        return float(np.median([x / y for x, y in zip(a, b, strict=True) if y > 0]))
    return stats.p50 / baseline.p50
