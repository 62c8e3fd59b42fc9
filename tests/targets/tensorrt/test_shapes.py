"""The optimization profile from the model's shapes and the caller's ranges (no TensorRT needed)."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.ground.errors import UsageError
from targets.tensorrt import TensorRTTarget
from targets.tensorrt.settings import ShapeProfile, derive_settings
from targets.tensorrt.shapes import shape_profiles
from tests.targets.tensorrt.conftest import dynamic_mlp, parse, static_mlp

# An image model whose height and width are dynamic besides the batch axis.
IMAGE = """
img (float[N, 3, H, W] x, float[N, 2] meta) => (float[N, 3, H, W] y) {
  y = Relu (x)
}
"""


def test_static_dims_are_fixed_ranges() -> None:
    assert shape_profiles(static_mlp(), 4, 8) == (ShapeProfile("x", (1, 8), (1, 8), (1, 8)),)


def test_shape_ranges_give_dynamic_dims_min_opt_max() -> None:
    model = parse(IMAGE)
    ranges = {"x": ((1, 3, 128, 96), (1, 3, 224, 224), (1, 3, 512, 640))}
    (x, meta) = shape_profiles(model, 4, 16, shape_ranges=ranges)
    # the batch axis is always 1..max_batch (opt: batch): the evaluation batches must fit
    assert x == ShapeProfile("x", (1, 3, 128, 96), (4, 3, 224, 224), (16, 3, 512, 640))
    assert meta == ShapeProfile("meta", (1, 2), (4, 2), (16, 2))


def test_input_shapes_and_ranges_mix_per_input() -> None:
    model = parse(IMAGE)
    s = derive_settings(
        model,
        precision="fp32",
        batch=2,
        max_batch=8,
        input_shapes={"x": (1, 3, 64, 64)},
    )
    assert s.profile("x") == ShapeProfile("x", (1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64))
    target = TensorRTTarget(
        precision="fp32", shape_ranges={"x": ((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96, 96))}
    )
    p = target.settings_for(model).profile("x")
    assert p is not None and p.min == (1, 3, 32, 32) and p.max == (16, 3, 96, 96)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape_ranges": {"y": ((1, 8), (1, 8), (1, 8))}}, r"shape ranges given for \['y'\]"),
        (
            {"input_shapes": {"x": (1, 8)}, "shape_ranges": {"x": ((1, 8), (1, 8), (1, 8))}},
            "either a shape or a shape range",
        ),
        ({"shape_ranges": {"x": ((1, 8), (1, 8))}}, r"\(min, opt, max\) shapes"),
        ({"shape_ranges": {"x": ((1, 8), (1, 4), (1, 8))}}, "min <= opt <= max"),
        ({"shape_ranges": {"x": ((1, 8), (1, 8, 1), (1, 8))}}, "differ in rank"),
        ({"shape_ranges": {"x": ((1, 7), (1, 8), (1, 9))}}, "static dimension 8 at axis 1"),
        ({"shape_ranges": {"x": ((1, 0), (1, 8), (1, 8))}}, "must be positive"),
        ({"shape_ranges": {"x": ((1, 8, 1), (1, 8, 1), (1, 8, 1))}}, "has rank 3"),
    ],
)
def test_bad_ranges_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        shape_profiles(dynamic_mlp(), 1, 4, **kwargs)
    assert err.value.exit_code == 2


def test_dynamic_dims_without_a_range_are_refused() -> None:
    with pytest.raises(UsageError, match="dynamic dimension at axis 2.*shape range"):
        shape_profiles(parse(IMAGE), 1, 4)
