"""Sanity without budgets (#16 part 5): "passed" never hides a broken model."""

from __future__ import annotations

import math

import numpy as np

from compiler.evaluate import Accuracy, compare_outputs
from compiler.sanity import accuracy_warnings, weights_warnings


def _accuracy(noise: float, classes: int = 10) -> Accuracy:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(64, classes))
    return compare_outputs(ref, ref + rng.normal(scale=noise, size=ref.shape))


def test_far_below_fp32_warns_without_a_budget() -> None:
    broken = _accuracy(noise=3.0)
    assert broken.top1_agreement is not None and broken.top1_agreement < 0.9
    (warning,) = accuracy_warnings(broken, budgeted=False)
    assert "top-1 agreement" in warning and "--min-accuracy" in warning
    assert accuracy_warnings(broken, budgeted=True) == []  # the budget's gate speaks instead


def test_close_to_fp32_is_quiet() -> None:
    assert accuracy_warnings(_accuracy(noise=1e-3), budgeted=False) == []


def test_embeddings_are_judged_by_cosine() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(16, 384))
    far = compare_outputs(ref, ref + rng.normal(scale=0.5, size=ref.shape), class_scores=False)
    assert far.top1_agreement is None and far.cosine < 0.99
    (warning,) = accuracy_warnings(far, budgeted=False)
    assert "cosine" in warning
    nan = compare_outputs(ref, np.full_like(ref, math.nan), class_scores=False)
    assert accuracy_warnings(nan, budgeted=False) == [
        "the compiled model's outputs are not finite (NaN)"
    ]


def test_random_zoo_weights_say_so() -> None:
    (warning,) = weights_warnings("random init (seed 0), no pretrained weights available offline")
    assert "untrained" in warning
    assert weights_warnings("trained here on sklearn load_digits") == []
