"""Calibration: one pass of the FP32 model over the data, then a range per tensor.

`collect_stats(model, names, batches)` adds the tensors that need ranges as graph
outputs and runs the model once with onnxruntime's CPU provider. Every tensor
keeps, in a single pass, an exact running min/max, its count of exact zeros, and
a histogram anchored at 0 (`Histogram`): `bins` bins of width w on each side of 0.
The first batch fixes w from its largest magnitude; when a later value falls
outside ±bins*w the width doubles and adjacent bin pairs merge — the re-binning
is exact because both sides are anchored at 0 and bins is even. The histogram
sees at most `sample_limit` elements per tensor and batch (an evenly strided
subset); min, max and zeros are exact over all finite elements. Infinite and NaN
values (a masked attention score is -inf) are counted apart and otherwise ignored.

Calibrators (`Histogram.range(method, ...)`), for a quantizer with `levels`
steps (255 for 8 bits) that is symmetric or not:

- ``minmax``: [min, max];
- ``percentile``: the p-th percentile of the values above zero and the
  (100-p)-th below zero (p = 99.99 by default); symmetric quantizers use |x|;
- ``entropy``: TensorRT's KL-divergence calibration on |x| (or on x ≥ 0 for
  non-negative tensors): for each candidate threshold the clipped reference
  distribution P is compared with its quantized copy Q (levels/2 bins for |x|,
  levels for x ≥ 0), and the threshold with the smallest KL(P||Q) wins;
- ``mse``: the range that minimizes the expected squared error: uniform rounding
  noise Δ²/12 for every non-zero value inside [lo, hi] (Δ = (hi-lo)/levels; exact
  zeros cost nothing since 0 is representable) plus the squared clipping error
  of those outside, computed with prefix sums over bin edges; asymmetric ranges
  alternate between lo and hi three times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy", "mse")

Progress = Callable[[int, int | None], None]


def _min_max(flat: np.ndarray) -> tuple[float, float]:
    """Exact min and max in one pass on torch's threads (3x numpy's two passes on
    MobileNetV2's largest activations; NaN propagates as in numpy)."""
    import torch

    lo, hi = torch.aminmax(torch.from_numpy(np.ascontiguousarray(flat)))
    return float(lo), float(hi)


def _bin_counts(flat: np.ndarray, width: float, bins: int) -> tuple[np.ndarray, int]:
    """(counts of floor(x / width) over [-bins, bins), clipped into its end bins and
    offset by `bins`; the number of exact zeros). The same float32 products as numpy's,
    clipped while still float (exact: floor gives integers) and counted as int32 in
    torch; zeros counted in numpy, whose comparison is 5x torch's here (2.4 -> 1.2 ms
    for a 2^18-element tensor)."""
    import torch

    flat = np.ascontiguousarray(flat)
    t = torch.from_numpy(flat)
    idx = t.mul(torch.tensor(1.0 / width, dtype=torch.float32)).floor_()
    idx = idx.clamp_(-bins, bins - 1).add_(bins).to(torch.int32)
    counts = torch.bincount(idx, minlength=2 * bins).numpy().astype(np.int64, copy=False)
    return counts, int(np.count_nonzero(flat == 0))


@dataclass
class Histogram:
    """Running statistics of one tensor (see module docstring)."""

    bins: int = 2048
    sample_limit: int = 1 << 18
    min: float = float("inf")
    max: float = -float("inf")
    count: int = 0  # elements seen by the histogram (incl. zeros)
    zeros: int = 0
    nonfinite: int = 0  # inf/NaN elements, left out of everything else
    width: float = 0.0
    pos: np.ndarray = field(init=False, repr=False)  # set by __post_init__
    neg: np.ndarray = field(init=False, repr=False)  # neg[k]: [-(k+1)w, -kw)

    def __post_init__(self) -> None:
        if self.bins % 2:
            raise ValueError("bins must be even")
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        if flat.size == 0:
            return
        lo, hi = _min_max(flat)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            # -inf (an attention mask's Where) or NaN: no finite range holds them, and a
            # width chasing inf doubled forever; the histogram sees the finite values only
            flat = flat[np.isfinite(flat)]
            self.nonfinite += int(x.size) - flat.size
            if flat.size == 0:
                return
            lo, hi = float(flat.min()), float(flat.max())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        if flat.size > self.sample_limit:
            flat = flat[:: -(-flat.size // self.sample_limit)]
        amax = max(-self.min, self.max)
        if self.width == 0.0:
            if amax == 0.0:
                self.zeros += flat.size
                self.count += flat.size
                return
            self.width = amax / self.bins * (1 + 1e-6)
        while amax >= self.width * self.bins:
            self._double()
        counts, nz = _bin_counts(flat, self.width, self.bins)
        counts[self.bins] -= nz
        self.zeros += nz
        self.count += flat.size
        self.pos += counts[self.bins :]
        self.neg += counts[: self.bins][::-1]

    def _double(self) -> None:
        half = self.bins // 2
        self.pos = np.concatenate([self.pos.reshape(half, 2).sum(1), np.zeros(half, np.int64)])
        self.neg = np.concatenate([self.neg.reshape(half, 2).sum(1), np.zeros(half, np.int64)])
        self.width *= 2

    # -- calibrators ------------------------------------------------------------------

    def range(
        self,
        method: str,
        *,
        levels: int = 255,
        symmetric: bool = False,
        percentile: float = 99.99,
        clip_weight: float = 1.0,
    ) -> tuple[float, float]:
        """The calibrated [lo, hi] for `method` (see module docstring)."""
        if self.count == 0 and not np.isfinite(self.min):
            raise ValueError("no data was collected for this tensor")
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if method == "minmax" or self.width == 0.0:
            return self._sym(lo, hi) if symmetric else (lo, hi)
        if method == "percentile":
            return self._percentile(percentile, symmetric)
        if method == "entropy":
            return self._entropy(levels, symmetric)
        if method == "mse":
            return self._mse(levels, symmetric, clip_weight)
        raise ValueError(
            f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}"
        )

    def cover(self, rng: tuple[float, float], *, symmetric: bool) -> tuple[float, float]:
        """`rng` widened to hold every finite value seen (for a graph output's range)."""
        if not np.isfinite(self.min) or not np.isfinite(self.max):
            return rng
        lo, hi = min(rng[0], self.min, 0.0), max(rng[1], self.max, 0.0)
        return self._sym(lo, hi) if symmetric else (lo, hi)

    def clip_error(self, lo: float, hi: float) -> float:
        """Summed squared clipping error of the histogrammed values for the range [lo, hi]
        (bin centres; divide by `count` for the expected error per element)."""
        if self.width == 0.0:
            return 0.0
        centers = (np.arange(self.bins, dtype=np.float64) + 0.5) * self.width
        # pos[k] holds [k w, (k+1) w), neg[k] [-(k+1) w, -k w); no value lies past min/max
        above = np.maximum(np.minimum(centers, max(self.max, 0.0)) - hi, 0.0)
        below = np.maximum(np.minimum(centers, max(-self.min, 0.0)) + lo, 0.0)  # lo <= 0
        return float(self.pos @ (above**2) + self.neg @ (below**2))

    @staticmethod
    def _sym(lo: float, hi: float) -> tuple[float, float]:
        a = max(-lo, hi)
        return (-a, a)

    def _edges(self) -> np.ndarray:
        return np.arange(1, self.bins + 1, dtype=np.float64) * self.width

    def _percentile(self, p: float, symmetric: bool) -> tuple[float, float]:
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        tail = self.count * (1 - p / 100.0)
        edges = self._edges()
        if symmetric:
            mag = self.pos + self.neg
            k = _first_where_tail_le(mag, tail)
            t = min(edges[k], max(-self.min, self.max))
            return (-t, t)
        hi = min(edges[_first_where_tail_le(self.pos, tail)], self.max) if self.max > 0 else 0.0
        lo = -min(edges[_first_where_tail_le(self.neg, tail)], -self.min) if self.min < 0 else 0.0
        return (lo, hi)

    def _entropy(self, levels: int, symmetric: bool) -> tuple[float, float]:
        nonneg = self.min >= 0 and not symmetric
        hist = self.pos.copy() if nonneg else self.pos + self.neg
        hist[0] += self.zeros
        nq = levels if nonneg else (levels + 1) // 2
        last = int(np.nonzero(hist)[0].max()) + 1 if hist.any() else nq
        k = _kl_threshold(hist[: max(last, nq)], nq)
        t = k * self.width
        if nonneg:
            return (0.0, min(t, self.max))
        t = min(t, max(-self.min, self.max))
        if symmetric:
            return (-t, t)
        return (max(self.min, -t), min(self.max, t))

    def _mse(self, levels: int, symmetric: bool, k: float) -> tuple[float, float]:
        w = self.width
        centers = (np.arange(self.bins, dtype=np.float64) + 0.5) * w
        if symmetric:
            t = _best_upper(
                self.pos + self.neg,
                centers,
                lambda t: 2 * t / levels,
                max(-self.min, self.max),
                w,
                0.0,
                k,
            )
            return (-t, t)
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        for _ in range(3 if lo < 0 else 1):
            if hi > 0:

                def above(t: np.ndarray, lo: float = lo) -> np.ndarray:
                    return (t - lo) / levels

                hi = _best_upper(self.pos, centers, above, self.max, w, 0.0, k)
            if lo < 0:

                def below(t: np.ndarray, hi: float = hi) -> np.ndarray:
                    return (t + hi) / levels

                lo = -_best_upper(self.neg, centers, below, -self.min, w, 0.0, k)
        return (lo, hi)


def _first_where_tail_le(hist: np.ndarray, tail: float) -> int:
    """Smallest k such that the count strictly above bin k is <= tail."""
    above = hist.sum() - np.cumsum(hist)
    return int(np.argmax(above <= tail))


def _best_upper(
    hist: np.ndarray,
    centers: np.ndarray,
    step: Callable[[np.ndarray], np.ndarray],
    vmax: float,
    width: float,
    fixed: float,
    k: float = 1.0,
) -> float:
    """Upper threshold t (a bin edge, or vmax) minimizing noise inside + clipping outside."""
    n = hist.astype(np.float64)
    # suffix sums over bins strictly above each candidate edge k*w (k = 1..bins)
    s0 = np.cumsum(n[::-1])[::-1]
    s1 = np.cumsum((n * centers)[::-1])[::-1]
    s2 = np.cumsum((n * centers**2)[::-1])[::-1]
    s0 = np.append(s0[1:], 0.0)
    s1 = np.append(s1[1:], 0.0)
    s2 = np.append(s2[1:], 0.0)
    t = np.arange(1, len(n) + 1, dtype=np.float64) * width
    keep = t < vmax
    t = np.append(t[keep], vmax)
    s0, s1, s2 = np.append(s0[keep], 0.0), np.append(s1[keep], 0.0), np.append(s2[keep], 0.0)
    inside = n.sum() - s0
    delta = step(t)
    err = inside * delta**2 / 12.0 + k * (s2 - 2 * t * s1 + t * t * s0) + fixed
    return float(t[int(np.argmin(err))])


def _kl_threshold(hist: np.ndarray, nq: int, stride: int | None = None) -> int:
    """TensorRT's entropy calibration: the number of bins to keep (threshold = k * width)."""
    hist = hist.astype(np.float64)
    n = len(hist)
    if n <= nq:
        return n
    stride = stride or max(1, (n - nq) // 512)
    best, best_k = np.inf, n
    total = hist.sum()
    for k in range(nq, n + 1, stride):
        ref = hist[:k].copy()
        ref[-1] += hist[k:].sum()
        starts = np.floor(np.arange(nq) * (k / nq)).astype(np.int64)
        starts = np.unique(starts)
        lengths = np.diff(np.append(starts, k))
        nonzero = (hist[:k] != 0).astype(np.float64)
        sums = np.add.reduceat(hist[:k], starts)
        nzc = np.add.reduceat(nonzero, starts)
        avg = np.where(nzc > 0, sums / np.maximum(nzc, 1), 0.0)
        q = np.repeat(avg, lengths) * nonzero
        p = ref / total
        qs = q.sum()
        if qs == 0:
            continue
        q = q / qs
        m = p > 0
        qm = np.where(q[m] > 0, q[m], 1e-12)
        kl = float((p[m] * np.log(p[m] / qm)).sum())
        if kl < best:
            best, best_k = kl, k
    return best_k


# -- running the model ------------------------------------------------------------------


def run_with_outputs(
    model: ir.Model,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    visit: Callable[[str, np.ndarray], None],
    *,
    progress: Progress | None = None,
    total: int | None = None,
    threads: int = 0,
    extra: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None] | None = None,
    max_batch: int | None = None,
) -> int:
    """Run `model` on every batch with `names` added as outputs; call visit(name, array).

    Graph inputs among `names` are visited with the fed array. `extra(outputs, feeds)`
    sees every output by name (the model's own ones too). `max_batch` splits larger
    batches (fetched tensors of a whole batch are in memory at once). Returns the
    number of samples run.
    """
    graph_inputs = {v.name for v in model.graph.inputs}
    fetch = [n for n in names if n not in graph_inputs]
    session = graph_tools.ort_session(graph_tools.model_bytes(model, fetch), threads=threads)
    out_names = [o.name for o in session.get_outputs()]
    done = 0
    for feeds in _split(batches, max_batch):
        outs = session.run(None, dict(feeds))
        by_name = dict(zip(out_names, outs, strict=True))
        for n in names:
            visit(n, feeds[n] if n in graph_inputs else by_name[n])
        if extra is not None:
            extra(by_name, feeds)
        done += int(next(iter(feeds.values())).shape[0])
        if progress is not None:
            progress(done, total)
    return done


def _split(
    batches: Iterable[Mapping[str, np.ndarray]], size: int | None
) -> Iterable[Mapping[str, np.ndarray]]:
    for feeds in batches:
        n = int(next(iter(feeds.values())).shape[0])
        if size is None or n <= size:
            yield feeds
            continue
        for start in range(0, n, size):
            yield {k: v[start : start + size] for k, v in feeds.items()}


@dataclass
class CalibrationResult:
    stats: dict[str, Histogram]
    samples: int
    seconds: float

    def ranges(self, method: str, **options: Any) -> dict[str, tuple[float, float]]:
        """Every tensor's range by `method`; `options` are `Histogram.range`'s keywords."""
        return {n: h.range(method, **options) for n, h in self.stats.items()}


def collect_stats(
    model: ir.Model,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: Progress | None = None,
    total: int | None = None,
    bins: int = 2048,
    sample_limit: int = 1 << 18,
    threads: int = 0,
) -> CalibrationResult:
    """One pass over `batches`, histogramming every tensor in `names`."""
    t0 = time.perf_counter()
    stats = {n: Histogram(bins=bins, sample_limit=sample_limit) for n in names}
    samples = run_with_outputs(
        model,
        names,
        batches,
        lambda n, a: stats[n].update(a),
        progress=progress,
        total=total,
        threads=threads,
    )
    if samples == 0:
        raise ValueError("calibration saw no samples")
    return CalibrationResult(stats, samples, time.perf_counter() - t0)
