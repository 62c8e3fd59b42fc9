"""Calibrators on known distributions, and the one-pass histogram's re-binning."""

from __future__ import annotations

import numpy as np
import pytest

from passes.quantize.calibrate import METHODS, Histogram, collect_stats
from passes.quantize.data import CalibrationStream, model_inputs
from tests.passes.quantize import _models


def _hist(batches: list[np.ndarray], **kw) -> Histogram:  # type: ignore[no-untyped-def]
    h = Histogram(**kw)
    for b in batches:
        h.update(b)
    return h


def test_minmax_is_exact_over_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.1, 1.0, 3.0)]
    h = _hist(batches)
    lo, hi = h.range("minmax")
    assert lo == min(b.min() for b in batches) and hi == max(b.max() for b in batches)
    assert h.range("minmax", symmetric=True) == (-max(-lo, hi), max(-lo, hi))


def test_rebinning_keeps_every_count_and_edge_alignment() -> None:
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 10000).astype(np.float32)
    big = rng.uniform(-50, 50, 10000).astype(np.float32)
    h = _hist([small, big], bins=256)
    assert h.pos.sum() + h.neg.sum() + h.zeros == h.count == 20000
    # after doubling, a fresh histogram over the same data at the final width agrees
    ref = Histogram(bins=256)
    ref.width = h.width
    ref.min, ref.max = h.min, h.max
    ref.update(np.concatenate([small, big]))
    np.testing.assert_array_equal(h.pos, ref.pos)
    np.testing.assert_array_equal(h.neg, ref.neg)


def test_percentile_on_a_known_sample() -> None:
    x = np.arange(1, 100001, dtype=np.float32) / 1000.0  # uniform on (0, 100]
    h = _hist([x], sample_limit=1 << 20)
    lo, hi = h.range("percentile", percentile=99.0)
    assert lo == 0.0  # non-negative data: zero is the lower end
    assert hi == pytest.approx(99.0, abs=0.1)
    lo, hi = h.range("percentile", percentile=100.0)
    assert hi == pytest.approx(100.0, abs=0.05)


def test_exact_zeros_are_counted_apart() -> None:
    x = np.concatenate([np.zeros(9000, np.float32), np.linspace(0.1, 6, 1000, dtype=np.float32)])
    h = _hist([x])
    assert h.zeros == 9000 and h.pos.sum() == 1000
    # 99.99th percentile of all values (zeros included) is near the top
    assert h.range("percentile", percentile=99.99)[1] > 5.9


def test_entropy_clips_rare_outliers() -> None:
    rng = np.random.default_rng(2)
    body = np.abs(rng.normal(0, 1, 200000)).astype(np.float32)
    outliers = np.array([40.0, 55.0], np.float32)
    h = _hist([np.concatenate([body, outliers])], sample_limit=1 << 20)
    lo, hi = h.range("entropy")
    assert lo == 0.0
    # far below the outliers, but keeping the bulk of a half-normal (P(x > 3) = 0.27%)
    assert 2.5 < hi < 20.0


def test_mse_balances_rounding_and_clipping() -> None:
    rng = np.random.default_rng(2)
    x = rng.laplace(0, 1, 400000).astype(np.float32)
    h = _hist([x], sample_limit=1 << 20)
    lo, hi = h.range("mse")
    # the expected-error minimum of an 8-bit quantizer on a Laplacian is well inside
    # the extremes (about 10 scale units for 255 levels) and far outside the bulk
    assert np.percentile(x, 99.9) < hi < x.max() and x.min() < lo < np.percentile(x, 0.1)
    noise = {}
    for t in (hi * 0.5, hi, min(hi * 1.5, float(x.max()))):
        step = 2 * t / 255
        q = np.clip(np.round(x / step), -127, 127) * step
        noise[t] = float(((q - x) ** 2).mean())
    assert noise[hi] <= min(noise.values()) * 1.05


def test_symmetric_ranges_are_symmetric() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 1, 100000).astype(np.float32)
    h = _hist([x], sample_limit=1 << 20)
    for method in METHODS:
        lo, hi = h.range(method, symmetric=True, levels=254)
        assert lo == -hi and hi > 0


def test_unknown_method_and_empty_histogram() -> None:
    h = _hist([np.ones(10, np.float32)])
    with pytest.raises(ValueError, match="unknown calibration method"):
        h.range("kl")
    with pytest.raises(ValueError, match="no data"):
        Histogram().range("minmax")


def test_collect_stats_is_one_pass_with_progress() -> None:
    model = _models.block_model()
    x = _models.images(20)
    stream = CalibrationStream(x, model_inputs(model), batch_size=8)
    seen: list[tuple[int, int | None]] = []
    result = collect_stats(
        model, ["x", "r1"], stream, total=stream.total, progress=lambda d, t: seen.append((d, t))
    )
    assert result.samples == 20 and seen == [(8, 20), (16, 20), (20, 20)]
    assert result.stats["x"].range("minmax") == (float(min(x.min(), 0)), float(x.max()))
    assert result.stats["r1"].min >= 0.0


def test_bin_counts_equal_numpys_floor_of_float32_products() -> None:
    """The torch binning counts what numpy's float32 floor(x / width) counts, clipped
    into the end bins, at widths that put values exactly on bin edges too."""
    from passes.quantize.calibrate import _bin_counts

    rng = np.random.default_rng(0)
    flat = np.concatenate(
        [rng.standard_normal(50_000).astype(np.float32) * 3, np.zeros(100, np.float32)]
    )
    flat[:64] = np.arange(64, dtype=np.float32) * np.float32(0.25)  # on the 0.25 edges
    for width in (0.25, 0.0123, 1e-3):
        idx = np.clip(np.floor(flat * np.float32(1.0 / width)).astype(np.int64), -2048, 2047)
        counts, zeros = _bin_counts(flat, width, 2048)
        np.testing.assert_array_equal(counts, np.bincount(idx + 2048, minlength=4096))
        assert zeros == 100 + 1  # the 100 zeros and arange's first value
