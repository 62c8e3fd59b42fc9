"""`edgec bench A B ...`: latency of artifacts (or models, as exported) on one target.

One argument is timed alone (`targets.latency.bench_runner`, as always); several
are timed in paired alternating blocks (`targets.latency.measure_interleaved`,
the loop the compile's measure stage uses for artifact vs FP32 baseline), and
each one's ratio to the first is the median over rounds of the ratio of the two
block medians (`targets.latency.latency_ratio`), so machine drift cancels out.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.data import graph_inputs, random_feeds
from compiler.ground.io import save_onnx
from compiler.sources import resolve
from targets.base import Target
from targets.latency import (
    LatencyStats,
    bench_runner,
    latency_ratio,
    measure_interleaved,
    timed_call,
)


@dataclass(frozen=True)
class Benched:
    """One argument's latency, and its paired ratio to the first argument's (1.0 for it)."""

    label: str
    model: str
    stats: LatencyStats
    ratio_to_first: float


def _labels(args: list[str]) -> list[str]:
    """The arguments as given; a repeated one gets `#2`, `#3` so each is timed apart."""
    seen: dict[str, int] = {}
    labels = []
    for a in args:
        seen[a] = seen.get(a, 0) + 1
        labels.append(a if seen[a] == 1 else f"{a}#{seen[a]}")
    return labels


def bench(
    args: list[str],
    target: Target,
    *,
    threads: int,
    batch: int,
    shape: tuple[int, ...] | None,
    named_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Benched]:
    """Time each argument (a .onnx artifact, a zoo name or module:factory) on `target`;
    `named_shapes` shape the inputs they name (`--input-shape NAME:DIMS`)."""
    labels = _labels(args)
    names: dict[str, str] = {}
    calls: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for i, (arg, label) in enumerate(zip(args, labels, strict=True)):
            source = resolve(arg, input_shape=shape)
            infos = graph_inputs(source.proto, shape, source.default_dims, named_shapes)
            feeds = random_feeds(infos, batch)
            path = Path(arg)
            if source.kind != "onnx":
                path = Path(tmp) / f"model{i}.onnx"
                save_onnx(source.proto, path)
            runner = stack.enter_context(target.runner(path, threads=threads))
            if len(args) == 1:
                stats = bench_runner(runner, feeds, batch=batch, threads=threads)
                return [Benched(label, source.name, stats, 1.0)]
            names[label] = source.name
            cast = getattr(runner, "cast_feeds", dict)
            calls[label] = timed_call(runner, cast(feeds))
        measured = measure_interleaved(calls, batch=batch, threads=threads)
    first = measured[labels[0]]
    return [
        Benched(label, names[label], measured[label], latency_ratio(measured[label], first))
        for label in labels
    ]
