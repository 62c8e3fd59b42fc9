"""The engine's optimization profile: a min/opt/max shape per network input (pure Python).

TensorRT builds an engine for a range of input shapes: one optimization
profile that gives every dynamic input a minimum, optimum and maximum shape
(`IOptimizationProfile.set_shape(name, min, opt, max)`). `shape_profiles`
derives it from the model's declared input shapes and what the caller says:

- a static dimension d is the range d..d (the caller may not contradict it);
- a dynamic axis 0 is the batch axis: 1..`max_batch`, optimum `batch`. It is
  never taken from the caller's shapes, so that the batches the pipeline
  evaluates with (`max_batch`) always fit the engine;
- any other dynamic dimension comes from the caller: `input_shapes` fixes it
  (min = opt = max, e.g. from `--input-shape`), `shape_ranges` gives it a range
  (per input `(min, opt, max)` full shapes). Without either it is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from compiler.ground.errors import InvalidInput, UsageError

__all__ = ["ShapeProfile", "ShapeRange", "shape_profiles"]

#: A caller's range for one input: full (min, opt, max) shapes.
ShapeRange = tuple[Sequence[int], Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class ShapeProfile:
    """The shape range of one network input inside TensorRT's optimization profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("min", "opt", "max"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"shape profile of {self.name!r}: min, opt and max differ in rank")
        for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True):
            if not 0 <= lo <= mid <= hi:
                raise ValueError(
                    f"shape profile of {self.name!r} needs 0 <= min <= opt <= max per axis, "
                    f"got {self.min}, {self.opt}, {self.max}"
                )

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "min": list(self.min),
            "opt": list(self.opt),
            "max": list(self.max),
        }


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (overridable defaults are not fed)."""
    inits = {i.name for i in graph.initializer}
    return [vi for vi in graph.input if vi.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    """Static dims as ints, symbolic/unknown ones as None; None when the rank is unknown."""
    if not vi.type.HasField("tensor_type"):
        raise InvalidInput(f"input {vi.name!r} is not a tensor; TensorRT takes tensor inputs only")
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim
    ]


def _check_names(
    known: set[str], input_shapes: Mapping[str, object], shape_ranges: Mapping[str, object]
) -> None:
    for what, given in (("input shapes", input_shapes), ("shape ranges", shape_ranges)):
        unknown = sorted(set(given) - known)
        if unknown:
            raise UsageError(
                f"{what} given for {unknown}, but the model's inputs are {sorted(known)}"
            )
    both = sorted(set(input_shapes) & set(shape_ranges))
    if both:
        raise UsageError(f"give {both} either a shape or a shape range, not both")


def _explicit(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(d) for d in shape)
    if any(d < 1 for d in out):
        raise UsageError(f"input shape {out} for {name!r} must be positive")
    return out


def _caller_range(
    name: str, input_shapes: Mapping[str, Sequence[int]], shape_ranges: Mapping[str, ShapeRange]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """The caller's (min, opt, max) for `name`, checked for sign and rank agreement."""
    if name in input_shapes:
        fixed = _explicit(name, input_shapes[name])
        return fixed, fixed, fixed
    if name not in shape_ranges:
        return None
    try:
        lo, mid, hi = (_explicit(name, s) for s in shape_ranges[name])
    except ValueError:
        raise UsageError(f"the shape range for {name!r} must be (min, opt, max) shapes") from None
    try:
        ShapeProfile(name, lo, mid, hi)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return lo, mid, hi


def _axis_range(
    name: str,
    axis: int,
    d: int | None,
    given: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None,
    batch: int,
    max_batch: int,
) -> tuple[int, int, int]:
    """(min, opt, max) of one axis: static, the batch range, or the caller's."""
    if d is not None:
        if given is not None and axis > 0 and any(s[axis] != d for s in given):
            shown = given[1] if given[0] == given[2] else f"range {given}"
            raise UsageError(
                f"input shape {shown} for {name!r} disagrees with the model's static "
                f"dimension {d} at axis {axis}"
            )
        return d, d, d
    if axis == 0:
        return 1, batch, max_batch  # the batch axis: the evaluation batches must fit
    if given is None:
        raise UsageError(
            f"input {name!r} has a dynamic dimension at axis {axis}; TensorRT needs a "
            "range for it: give the input's shape explicitly (--input-shape), "
            "e.g. 1,3,224,224, or a (min, opt, max) shape range"
        )
    return given[0][axis], given[1][axis], given[2][axis]


def _input_profile(
    vi: onnx.ValueInfoProto,
    given: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None,
    batch: int,
    max_batch: int,
) -> ShapeProfile:
    dims = _dims(vi)
    name = vi.name
    if given is not None:
        rank = len(given[0])
        if dims is not None and len(dims) != rank:
            raise UsageError(
                f"input shape {given[1]} for {name!r} has rank {rank}, "
                f"the model's input has rank {len(dims)}"
            )
        dims = dims if dims is not None else [None] * rank  # the rank comes from the caller
    elif dims is None:
        raise UsageError(
            f"input {name!r} has no declared shape; give its shape explicitly "
            "(--input-shape), e.g. 1,3,224,224"
        )
    lo: list[int] = []
    opt: list[int] = []
    hi: list[int] = []
    for axis, d in enumerate(dims):
        r = _axis_range(name, axis, d, given, batch, max_batch)
        lo.append(r[0])
        opt.append(r[1])
        hi.append(r[2])
    return ShapeProfile(name, tuple(lo), tuple(opt), tuple(hi))


def shape_profiles(
    model: onnx.ModelProto,
    batch: int,
    max_batch: int,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    shape_ranges: Mapping[str, ShapeRange] | None = None,
) -> tuple[ShapeProfile, ...]:
    """One `ShapeProfile` per real input of `model` (see the module docstring for the rules).

    Raises UsageError when the caller's shapes name unknown inputs, disagree
    with the model, or leave a dynamic dimension without a range.
    """
    input_shapes = input_shapes or {}
    shape_ranges = shape_ranges or {}
    inputs = real_inputs(model.graph)
    _check_names({vi.name for vi in inputs}, input_shapes, shape_ranges)
    return tuple(
        _input_profile(vi, _caller_range(vi.name, input_shapes, shape_ranges), batch, max_batch)
        for vi in inputs
    )
