"""What keeping one layer in float costs in latency, from onnxruntime's own profiler.

`layer_costs(float_model, build, layers, feeds)` profiles four models as the CPU
target deploys them (ENABLE_ALL, so the int8 Q/DQ groups run as QLinearConv & co.)
with `SessionOptions.enable_profiling`: the float model, the all-INT8 model
`build(∅)`, and two *island* models, `build(even layers)` and `build(odd layers)`
(`layers` in graph order), in which every other layer is float, mostly between
int8 neighbours: a float island, as the fallback makes it. Each kernel's duration
is read from the JSON traces (median over `PROFILED_CALLS` calls):

- int8 time of layer L (all-INT8 trace): the kernels named after L. onnxruntime's
  QDQ fusion names the fused node ``<L>_token_<n>``; an unfused node keeps its name;
- float time of L (the island trace where L is float; else the float model's): the
  kernels named after L, its output, or the output of the activation (Relu/Clip/...)
  or Add it is fused with: the NCHWc transformer names a fused convolution
  ``<output>_nchwc`` after the last fused output;
- boundary of L: an island dequantizes its input, quantizes its output and changes
  layout on both sides (QuantizeLinear, DequantizeLinear, Transpose, ReorderInput,
  ReorderOutput). Their kernels are mostly named ``Transpose_token_<n>``, so each is
  charged to the float layer nearest to it in execution order (traces list kernels in
  the order they ran), in the island trace where L is float. Measured on MobileNetV2
  these cost more than the float-vs-int8 difference of the layer itself (a
  ReorderInput of a 56x56x144 map: 0.2 ms).

Kernels are not all of it: each extra node also costs its dispatch, its threads'
synchronisation and its tensors' allocation, which the traces do not show and which
grow with the machine's load (MobileNetV2 on a loaded 2-core machine: the kernel sum
predicted 1.03x FP32 for an island model measured at 1.30x). Every island model is
therefore also timed whole, and the shortfall per island, averaged over the two,
is added to every layer as `overhead`. cost(L) = float(L) + boundary(L) + overhead -
int8(L), in ms per call; the model is additive. `checks` keeps, for each island
model, its latency ratio to FP32 as the kernels alone predict it, as kernels plus the
overhead fitted on the *other* island model predict it, and as measured (paired):
how far to trust the sum. A layer the traces do not name (fused away, renamed) gets its
int8 time times the median float/int8 ratio of the layers they do name (and no
boundary), and is listed in `estimated`.

Whole models are timed in sessions *without* the profiler, whose per-node records
slow every call (MobileNetV2 on a 2-core AVX-512 VNNI EPYC: all-INT8 at 0.81x FP32
profiled, 0.51x plain, which let the fallback's bound allow a model measured at
0.73x): the four are called in alternating blocks (one block of each per round, so
the machine's changing speed hits all alike), which give FP32's median latency,
all-INT8's and the island models' as ratios to it: the median over rounds of the
ratio of the two blocks' medians, as `targets.latency` does. `latency_ratios` times
any set of models the same way (the fallback checks its final model with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from compiler.ground.sessions import open_session, session_options
from compiler.ground.timing import alternating_blocks
from passes import graph_tools

__all__ = [
    "LatencyCosts",
    "LayerCost",
    "latency_ratios",
    "layer_costs",
    "median_ratios",
    "one_call_feeds",
]

logger = logging.getLogger(__name__)

#: kernels that exist only to cross between int8 and float (or between layouts)
_BOUNDARY_KERNELS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "Transpose", "ReorderInput", "ReorderOutput"}
)
#: single-consumer ops the CPU kernels fuse into the layer before them
_FUSED_AFTER = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add"}
)
_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")
#: untimed calls per session before timing (allocation, weight packing)
WARMUP_CALLS = 3
#: calls per model in the profiled sessions that give the kernel traces
PROFILED_CALLS = 10


@dataclass(frozen=True)
class LayerCost:
    """One layer's kernel times (ms per call) and what keeping it float costs."""

    int8_ms: float
    float_ms: float
    boundary_ms: float
    overhead_ms: float = 0.0  # per island, beyond the kernels (see the module docstring)

    @property
    def cost_ms(self) -> float:
        """Latency added by keeping the layer in float (negative: float is faster)."""
        return self.float_ms + self.boundary_ms + self.overhead_ms - self.int8_ms


@dataclass(frozen=True)
class LatencyCosts:
    """Per-layer costs and the two whole models' latencies, from one paired run."""

    fp32_ms: float  # median wall time of one FP32 call
    int8_ratio: float  # all-INT8 latency / FP32 latency, paired by rounds
    layers: dict[str, LayerCost]
    calls: int  # timed calls per model, warm-up included
    estimated: tuple[str, ...] = ()  # layers the traces did not name
    #: per island model, latency / FP32: (kernels alone predict, kernels plus the overhead
    #: fitted on the *other* island model predict, measured)
    checks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    island_overhead_ms: float = 0.0  # per float island, beyond its kernels (fitted)

    def ratio(self, layer: str) -> float:
        """`layer`'s cost as a fraction of FP32's latency."""
        return self.layers[layer].cost_ms / self.fp32_ms if self.fp32_ms > 0 else 0.0

    def predicted_ratio(self, kept_float: Sequence[str]) -> float:
        """Latency / FP32 of the int8 model with `kept_float` in float (additive model)."""
        return self.int8_ratio + sum(self.ratio(n) for n in kept_float if n in self.layers)


def one_call_feeds(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One deployed call's inputs from a calibration batch: batch 1, or the batch the
    model fixes."""
    out = {}
    for value in model.graph.inputs:
        name = value.name or ""
        if name not in feeds:
            continue
        dims = list(value.shape or ())
        first = dims[0] if dims else None
        n = first if isinstance(first, int) and first > 0 else 1
        out[name] = np.ascontiguousarray(feeds[name][:n])
    return out


def _keys(graph: ir.Graph, layers: Sequence[str]) -> dict[str, str]:
    """Names a layer's kernels may carry in a trace → the layer."""
    keys: dict[str, str] = {}
    wanted = set(layers)
    outputs = {o.name for o in graph.outputs}
    for node in graph:
        if node.name not in wanted:
            continue
        names = [node.name or ""]
        current = node
        for _ in range(3):  # Conv → Add → Relu at most
            names += [v.name or "" for v in current.outputs]
            if len(current.outputs) != 1 or current.outputs[0].name in outputs:
                break
            users = list(current.outputs[0].uses())
            if len(users) != 1 or users[0].node.op_type not in _FUSED_AFTER:
                break
            current = users[0].node
            names.append(current.name or "")
        for k in names:
            if k:
                keys.setdefault(k, node.name or "")
    return keys


@dataclass
class _Trace:
    """Median kernel time (µs) per trace node name, its op, and the elements of its
    first input and its first output."""

    us: dict[str, float]
    op: dict[str, str]
    elements_in: dict[str, int]
    elements_out: dict[str, int]
    order: list[str] = field(default_factory=list)  # node names in the order they first ran


def _elements(shapes: Any) -> int:
    if not shapes:
        return 0
    dims: list[int] = next(iter(shapes[0].values()), [])
    return int(np.prod(dims)) if dims else 0


def _read_trace(path: str) -> _Trace:
    with open(path) as f:
        events = json.load(f)
    durations: dict[str, list[float]] = defaultdict(list)
    trace = _Trace({}, {}, {}, {})
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        durations[node].append(float(e.get("dur", 0)))
        if node not in trace.op:
            trace.order.append(node)
            args = e.get("args") or {}
            trace.op[node] = str(args.get("op_name", ""))
            trace.elements_in[node] = _elements(args.get("input_type_shape"))
            trace.elements_out[node] = _elements(args.get("output_type_shape"))
    trace.us = {n: float(np.median(d)) for n, d in durations.items()}
    return trace


def _base(node: str) -> str:
    while True:
        stripped = _SUFFIX.sub("", node)
        if stripped == node:
            return node
        node = stripped


def _per_layer(trace: _Trace, keys: Mapping[str, str]) -> tuple[dict[str, float], dict[str, int]]:
    """Each layer's kernel time (µs) and the input + output elements of its largest kernel."""
    us: dict[str, float] = defaultdict(float)
    io: dict[str, int] = {}
    longest: dict[str, float] = {}
    for node, t in trace.us.items():
        layer = keys.get(node) or keys.get(_base(node))
        if layer is None:
            continue
        us[layer] += t
        if t >= longest.get(layer, -1.0):
            longest[layer] = t
            io[layer] = trace.elements_in.get(node, 0) + trace.elements_out.get(node, 0)
    return dict(us), io


def _layer_of(trace: _Trace, keys: Mapping[str, str]) -> dict[str, str]:
    """Trace node → the layer it computes (for the nodes the keys name)."""
    out = {}
    for node in trace.us:
        layer = keys.get(node) or keys.get(_base(node))
        if layer is not None:
            out[node] = layer
    return out


def _boundaries(trace: _Trace, keys: Mapping[str, str], float_layers: set[str]) -> dict[str, float]:
    """µs of boundary kernels charged to each float layer: the one nearest in execution
    order (ties: the next one, whose input a boundary usually prepares)."""
    of = _layer_of(trace, keys)
    anchors = [(i, of[n]) for i, n in enumerate(trace.order) if of.get(n) in float_layers]
    out: dict[str, float] = defaultdict(float)
    if not anchors:
        return {}
    for i, node in enumerate(trace.order):
        if trace.op.get(node) not in _BOUNDARY_KERNELS:
            continue
        _, layer = min(anchors, key=lambda a: (abs(a[0] - i), a[0] < i))
        out[layer] += trace.us[node]
    return dict(out)


def _round_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """`a` / `b` block by block (the blocks of one round were timed seconds apart)."""
    return [x / y for x, y in zip(a, b, strict=True) if y > 0]


def _paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    ratios = _round_ratios(a, b)
    return float(np.median(ratios)) if ratios else 1.0


def _sessions(
    models: Mapping[str, ir.Model], threads: int, profile_dir: str | None = None
) -> dict[str, Any]:
    """One deployed-form session per model (ENABLE_ALL); profiled into `profile_dir`.
    Idle workers do not spin: with several sessions called in turn on 2 cores, the
    spinning workers of the others slowed each call unevenly (MobileNetV2 all-INT8 /
    FP32 paired over 12 rounds of 10 calls: 0.68-0.76 in three runs with spinning,
    0.56-0.59 without)."""
    sessions = {}
    for tag, model in models.items():
        opts = session_options(threads=threads, level="all", spinning=False)
        if profile_dir is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(profile_dir, tag)
        sessions[tag] = open_session(graph_tools.model_bytes(model), opts)
    return sessions


def _timed_blocks(
    sessions: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray],
    *,
    rounds: int,
    block: int,
    progress: Callable[[int, int], None] | None = None,
    max_seconds: float | None = None,
    min_rounds: int = 3,
) -> dict[str, list[float]]:
    """Each session's block medians (ms per call), round by round, the sessions in
    rotating order, each block after an untimed call (`compiler.ground.timing`). Stops
    after `min_rounds` once `max_seconds` have passed."""
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds

    def stop(done: int, _: object) -> bool:
        if progress is not None:
            progress(done, rounds)
        return deadline is not None and done >= min_rounds and time.perf_counter() > deadline

    fns = {tag: functools.partial(s.run, None, dict(feeds)) for tag, s in sessions.items()}
    timed = alternating_blocks(fns, block=block, max_rounds=rounds, warmup=WARMUP_CALLS, stop=stop)
    return {tag: [statistics.median(b) / 1e6 for b in times] for tag, times in timed.items()}


def latency_ratios(
    models: Mapping[str, ir.Model], feeds: Mapping[str, np.ndarray], **timing: Any
) -> tuple[float, dict[str, float]]:
    """(`baseline`'s median ms per call, every model's latency / the baseline's): the
    median over rounds of the paired block-median ratio, without a profiler; `timing`
    takes `latency_ratio_rounds`'s keywords (`baseline` among them). The default 600
    calls a model are what the peer bench times: over 12 rounds of 10 a model with one
    float Add measured under a bound that 600 calls put it 0.05 over. A large model stops
    at `max_seconds` (after 3 rounds at least)."""
    base_ms, rounds = latency_ratio_rounds(models, feeds, **timing)
    return base_ms, median_ratios(rounds)


def median_ratios(rounds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each model's ratio: the median of its per-round ratios (1.0 when none were timed)."""
    return {t: float(np.median(r)) if r else 1.0 for t, r in rounds.items()}


def latency_ratio_rounds(
    models: Mapping[str, ir.Model],
    feeds: Mapping[str, np.ndarray],
    *,
    baseline: str,
    threads: int = 0,
    rounds: int = 30,
    block: int = 20,
    max_seconds: float = 60.0,
) -> tuple[float, dict[str, list[float]]]:
    """`latency_ratios` round by round: (`baseline`'s median ms per call, every model's
    paired block-median ratios to the baseline, one per round), so a caller can tell a
    difference from the noise."""
    blocks = _timed_blocks(
        _sessions(models, threads), feeds, rounds=rounds, block=block, max_seconds=max_seconds
    )
    base = blocks[baseline]
    return statistics.median(base), {t: _round_ratios(b, base) for t, b in blocks.items()}


def _profile(
    models: Mapping[str, ir.Model],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    rounds: int,
    block: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, _Trace], dict[str, list[float]]]:
    """Each model's kernel trace (`PROFILED_CALLS` calls in a profiled session) and its
    block medians (ms per call) round by round, timed in sessions without the profiler:
    its per-node records slow a call (MobileNetV2's all-INT8 model measured 0.81x FP32
    profiled against 0.51x plain), so no whole-model time comes from a profiled run."""
    blocks = _timed_blocks(
        _sessions(models, threads), feeds, rounds=rounds, block=block, progress=progress
    )
    with tempfile.TemporaryDirectory(prefix="edgec-profile-") as tmp:
        profiled = _sessions(models, threads, tmp)
        for s in profiled.values():
            for _ in range(PROFILED_CALLS):
                s.run(None, dict(feeds))
        return {tag: _read_trace(s.end_profiling()) for tag, s in profiled.items()}, blocks


def layer_costs(
    float_model: ir.Model,
    build: Callable[[frozenset[str]], ir.Model],
    layers: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 0,
    rounds: int = 12,
    block: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyCosts:
    """Per-layer float-vs-int8 costs of `layers` (node names of `float_model`, in graph
    order); `build(kept_float)` gives the Q/DQ model with those layers float. Profiled on
    `feeds` (one call's inputs, e.g. `one_call_feeds`) over `rounds` alternating blocks
    of `block` calls per model (see the module docstring). Long because the four traces
    meet here: kernels, boundaries, the fitted overhead and its cross-check read the
    same per-layer tables, and splitting them would pass those tables through every
    piece."""
    t0 = time.perf_counter()
    islands = {"even": frozenset(layers[0::2]), "odd": frozenset(layers[1::2])}
    models = {"fp32": float_model, "int8": build(frozenset())}
    models.update({tag: build(kept) for tag, kept in islands.items() if kept})
    traces, blocks = _profile(
        models, feeds, threads=threads, rounds=rounds, block=block, progress=progress
    )
    keys = _keys(float_model.graph, layers)
    float_us, _ = _per_layer(traces["fp32"], keys)
    int8_us, _ = _per_layer(traces["int8"], keys)
    island_us: dict[str, float] = {}
    boundary_us: dict[str, float] = {}
    for tag, kept in islands.items():
        if tag not in traces:
            continue
        us, _ = _per_layer(traces[tag], keys)
        island_us.update({n: t for n, t in us.items() if n in kept})
        boundary_us.update(_boundaries(traces[tag], keys, set(kept)))
    named = [n for n in layers if n in float_us and n in int8_us and int8_us[n] > 0]
    scale = float(np.median([float_us[n] / int8_us[n] for n in named])) if named else 1.0
    estimated = []
    costs: dict[str, LayerCost] = {}
    for n in layers:
        q = int8_us.get(n, 0.0)
        f = island_us.get(n, float_us.get(n))
        if f is None or n not in int8_us:
            estimated.append(n)
            f = q * scale
        costs[n] = LayerCost(q / 1000.0, f / 1000.0, boundary_us.get(n, 0.0) / 1000.0)
    fp32_ms = statistics.median(blocks["fp32"])
    result = LatencyCosts(
        fp32_ms=fp32_ms,
        int8_ratio=_paired_ratio(blocks["int8"], blocks["fp32"]),
        layers=costs,
        calls=rounds * (block + 1) + WARMUP_CALLS,
        estimated=tuple(estimated),
    )
    # What the kernels do not show (a node's dispatch and sync, its tensors' allocation)
    # is fitted per island from each island model's measured latency: the mean over
    # the two; each check predicts one model with the overhead fitted on the other.
    kernels = {t: result.predicted_ratio(sorted(islands[t])) for t in islands if t in blocks}
    measured = {t: _paired_ratio(blocks[t], blocks["fp32"]) for t in kernels}
    per_island = {t: (measured[t] - kernels[t]) * fp32_ms / len(islands[t]) for t in kernels}
    overhead = max(0.0, float(np.mean(list(per_island.values())))) if per_island else 0.0
    checks = {}
    for t in kernels:
        others = [v for k, v in per_island.items() if k != t] or [per_island[t]]
        fitted = max(0.0, float(np.mean(others))) * len(islands[t]) / fp32_ms
        checks[t] = (kernels[t], kernels[t] + fitted, measured[t])
    result = dataclasses.replace(
        result,
        layers={n: dataclasses.replace(c, overhead_ms=overhead) for n, c in costs.items()},
        checks=checks,
        island_overhead_ms=overhead,
    )
    logger.info(
        "layer latency: FP32 %.3f ms, all-INT8 %.3fx, %d layers (%d estimated), %.3f ms per "
        "island beyond kernels; islands (kernels, fitted on the other, measured) %s in %.1f s",
        fp32_ms,
        result.int8_ratio,
        len(costs),
        len(estimated),
        overhead,
        {k: tuple(round(x, 3) for x in v) for k, v in checks.items()},
        time.perf_counter() - t0,
    )
    return result
