"""Latency tests assert orderings and counts, never timings; the stopping rule is
checked against a fake clock so the counts are exact."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from targets.cpu import CpuTarget
from targets.cuda import BoundCall, CudaRunner
from targets.latency import (
    LatencyStats,
    bench_runner,
    bench_torch,
    compare,
    measure_latency,
    timed_call,
)
from tests.targets.conftest import TinyModel

REPORT_KEYS = {
    "batch", "threads", "warmup", "iterations", "p50", "p90", "p99", "mean", "throughput_per_s"
}  # fmt: skip


class FakeClock:
    """perf_counter_ns that moves only when the measured function 'runs'."""

    def __init__(self, durations_ns: list[int]) -> None:
        self.now = 0
        self.calls = 0
        self.durations = durations_ns

    def __call__(self) -> int:
        return self.now

    def work(self) -> None:
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


MakeClock = Callable[[list[int]], FakeClock]


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> MakeClock:
    def make(durations_ns: list[int]) -> FakeClock:
        clock = FakeClock(durations_ns)
        monkeypatch.setattr(time, "perf_counter_ns", clock)
        return clock

    return make


def _check_stats(stats: LatencyStats) -> None:
    assert stats.iterations == len(stats.samples_ms) > 0
    assert min(stats.samples_ms) <= stats.p50 <= stats.p90 <= stats.p99 <= max(stats.samples_ms)
    assert min(stats.samples_ms) <= stats.mean <= max(stats.samples_ms)


def test_constant_latency_stops_at_min_iterations(fake_clock: MakeClock) -> None:
    clock = fake_clock([2_000_000])  # 2 ms per call
    stats = measure_latency(clock.work, warmup=5, min_iterations=30, batch=4)
    assert stats.iterations == 30 and clock.calls == 35  # stable at the first check
    assert stats.p50 == stats.p99 == stats.mean == pytest.approx(2.0)
    assert stats.throughput_per_s == pytest.approx(2000.0)  # 4 samples / 2 ms


def test_unstable_latency_runs_to_max_iterations(fake_clock: MakeClock) -> None:
    # Every round is 10 % slower than the one before: never within rel_tol.
    durations = [int(1e6 * 1.1**r) for r in range(40) for _ in range(5)]
    clock = fake_clock(durations)
    stats = measure_latency(clock.work, warmup=0, min_iterations=10, max_iterations=73)
    assert stats.iterations == 73 and clock.calls == 73
    _check_stats(stats)


def test_drift_then_settle_stops_after_settling(fake_clock: MakeClock) -> None:
    # Rounds of 5: 1 ms, 2 ms, 3 ms, then 3 ms for good → stable when two 3 ms rounds meet.
    clock = fake_clock([1_000_000] * 5 + [2_000_000] * 5 + [3_000_000] * 1000)
    stats = measure_latency(clock.work, warmup=0, min_iterations=10, rel_tol=0.01)
    assert stats.iterations == 20
    assert stats.p50 == pytest.approx(2.5)


def test_max_seconds_never_cuts_below_min_iterations(fake_clock: MakeClock) -> None:
    clock = fake_clock([int(1e9) * (1 + i % 2) for i in range(10)])  # 1 s / 2 s, never stable
    stats = measure_latency(
        clock.work, warmup=3, min_iterations=8, max_iterations=100, max_seconds=5.0
    )
    assert stats.iterations == 8 and stats.warmup == 3 and clock.calls == 11


def test_max_seconds_stops_an_unstable_run(fake_clock: MakeClock) -> None:
    clock = fake_clock([1_000_000, 3_000_000, 1_000_000, 1_000_000, 9_000_000, 1_000_000])
    stats = measure_latency(clock.work, warmup=0, min_iterations=4, max_seconds=0.1, rel_tol=1e-9)
    # ~100 ms of calls averaging 2.67 ms each; the exact count depends only on the fake durations.
    assert 4 <= stats.iterations < 50
    assert sum(stats.samples_ms) >= 100.0


def test_real_sleep_ordering_and_limits() -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.0005)

    seen: list[int] = []
    stats = measure_latency(
        fn, warmup=2, min_iterations=6, max_iterations=12, max_seconds=5.0, progress=seen.append
    )
    assert 6 <= stats.iterations <= 12 and calls == 2 + stats.iterations
    assert seen == sorted(seen) and seen[-1] == stats.iterations
    _check_stats(stats)
    assert stats.p50 > 0


def test_fast_function_respects_max_iterations() -> None:
    stats = measure_latency(
        lambda: None, warmup=0, min_iterations=5, max_iterations=7, rel_tol=1e-12
    )
    assert 5 <= stats.iterations <= 7
    _check_stats(stats)


def test_to_dict_has_the_report_keys_and_rounds() -> None:
    stats = LatencyStats.from_samples((12.34567, 1.0, 0.0123456), batch=2, threads=1, warmup=0)
    d = stats.to_dict()
    assert set(d) == REPORT_KEYS
    assert d["threads"] == 1 and d["iterations"] == 3
    assert d["p50"] == 1.0
    assert d["mean"] == round(stats.mean, 3)  # 4.453... → 4.453
    assert LatencyStats.from_samples((0.0123456,), batch=1, threads=None, warmup=0).to_dict()[
        "p50"
    ] == pytest.approx(0.01235)
    assert "samples_ms" not in d and "samples_ms" not in repr(stats)


def test_compare_is_the_p50_ratio() -> None:
    slow = LatencyStats.from_samples((10.0, 10.0, 10.0), batch=1, threads=1, warmup=0)
    fast = LatencyStats.from_samples((4.0, 5.0, 6.0), batch=1, threads=1, warmup=0)
    assert compare(slow, fast) == pytest.approx(2.0)
    assert compare(fast, slow) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_iterations": 0},
        {"min_iterations": 10, "max_iterations": 5},
        {"warmup": -1},
        {"max_seconds": 0.0},
        {"rel_tol": 0.0},
        {"batch": 0},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        measure_latency(lambda: None, **kwargs)  # type: ignore[arg-type]


def test_bench_runner(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    feeds = {"x": np.ones((3, 8), np.float32)}
    with CpuTarget().runner(artifact.path, threads=1) as r:
        stats = bench_runner(r, feeds, warmup=1, min_iterations=4, max_iterations=8)
    assert stats.batch == 3 and stats.threads == 1
    assert 4 <= stats.iterations <= 8
    _check_stats(stats)


def test_timed_call_of_a_plain_runner_is_infer(tmp_path: Path, gemm_relu: TinyModel) -> None:
    artifact = CpuTarget().lower(gemm_relu.ir(), tmp_path, stem="m")
    with CpuTarget().runner(artifact.path, threads=1) as r:
        call = timed_call(r, {"x": np.ones((2, 8), np.float32)})
        assert r.last_inference_ms is None
        call()
        assert r.last_inference_ms is not None  # went through infer: outputs copied out


def test_bench_runner_times_the_bound_call(gemm_relu: TinyModel) -> None:
    # the CUDA runner's IO-bound path, run for real on the CPU provider
    model = gemm_relu.proto.SerializeToString()
    feeds = {"x": np.ones((3, 8), np.float32)}
    with CudaRunner(model, providers=("CPUExecutionProvider",), device="cpu", threads=1) as r:
        assert isinstance(timed_call(r, feeds), BoundCall)
        stats = bench_runner(r, feeds, warmup=1, min_iterations=4, max_iterations=8)
        assert r.timing_mode == "io_binding"
        assert r.last_inference_ms is None  # never through infer
    assert stats.batch == 3 and stats.threads == 1
    assert 4 <= stats.iterations <= 8
    _check_stats(stats)


def test_bench_torch_restores_threads_and_mode() -> None:
    import torch

    module = torch.nn.Linear(8, 4).train()
    before = torch.get_num_threads()
    stats = bench_torch(
        module, torch.ones(2, 8), threads=1, warmup=1, min_iterations=4, max_iterations=8
    )
    assert torch.get_num_threads() == before and module.training
    assert stats.batch == 2 and stats.threads == 1 and 4 <= stats.iterations <= 8
    _check_stats(stats)


def test_measure_interleaved_rotates_blocks_after_an_untimed_switch_call() -> None:
    from targets.latency import measure_interleaved

    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    stats = measure_interleaved(
        fns, warmup=2, round_size=3, min_rounds=2, max_rounds=2, max_seconds=60
    )
    assert {n: s.iterations for n, s in stats.items()} == {"a": 6, "b": 6}
    # warm-up, then per round one untimed call + 3 timed calls of each, the order
    # rotated every round so that no candidate always follows the same one
    assert calls == ["a"] * 2 + ["b"] * 2 + ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4


def test_latency_ratio_pairs_blocks_of_the_same_round() -> None:
    from targets.latency import latency_ratio

    def stats(samples: list[float], block: int) -> LatencyStats:
        return LatencyStats.from_samples(
            tuple(samples), batch=1, threads=1, warmup=0, block_size=block
        )

    # the machine is twice as slow in round 2; b is always half of a
    a = stats([4.0, 4.0, 8.0, 8.0, 4.0, 4.0], 2)
    b = stats([2.0, 2.0, 4.0, 4.0, 2.0, 2.0], 2)
    assert a.block_medians() == [4.0, 8.0, 4.0]
    assert latency_ratio(b, a) == pytest.approx(0.5)
    # b measured mostly in the slow state: medians mislead, pairs do not
    b_slow = stats([4.0, 4.0, 4.0, 4.0, 2.0, 2.0], 2)
    a_fast = stats([4.0, 4.0, 8.0, 8.0, 4.0, 4.0], 2)
    assert b_slow.p50 / a_fast.p50 == pytest.approx(1.0)
    assert latency_ratio(b_slow, a_fast) == pytest.approx(0.5)
    # without blocks: the ratio of p50s
    assert latency_ratio(stats([1.0, 3.0], 0), stats([4.0], 0)) == pytest.approx(0.5)
