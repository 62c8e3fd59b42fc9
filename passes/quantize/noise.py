"""Signal-to-quantization-noise ratio in dB: one definition for every step that judges
a quantized model against its float reference (bias correction's per-layer figure,
the residual-range trial, the sensitivity scores)."""

from __future__ import annotations

import math

import numpy as np


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): inf when the noise is 0 (exact), -inf when it is not
    finite (an overflow); a zero signal counts as 1e-30."""
    if noise == 0:
        return math.inf
    if not math.isfinite(noise):
        return -math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def energies(reference: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """(sum y^2, sum (y - y_q)^2) of one output, in float64."""
    r = reference.astype(np.float64)
    return float((r**2).sum()), float(((r - output.astype(np.float64)) ** 2).sum())
