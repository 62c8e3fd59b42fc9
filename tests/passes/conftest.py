"""Shared checks for pass tests: build graphs from ONNX text, run a pass and hold it to
the contract (valid output, same function, idempotent, exact `modified`).

Tests get them through the `kit` fixture (``kit.build``, ``kit.apply``...), which
works whatever the test tree's package layout.

Tolerances for `check_equivalent`: float32 rtol=1e-4, atol=1e-5 (its defaults);
float64 rtol=1e-9, atol=1e-12.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import types

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from passes.verify import check_equivalent

F32_TOL = {"rtol": 1e-4, "atol": 1e-5}
F64_TOL = {"rtol": 1e-9, "atol": 1e-12}


def build(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text syntax, with numpy arrays as named initializers."""
    proto = onnx.parser.parse_model(text)
    for name, array in initializers.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def serialized(model: ir.Model | onnx.ModelProto) -> bytes:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString(deterministic=True)


def op_counts(model: ir.Model | onnx.ModelProto) -> collections.Counter[str]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return collections.Counter(node.op_type for node in proto.graph.node)


def op_sequence(model: ir.Model | onnx.ModelProto) -> list[str]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return [node.op_type for node in proto.graph.node]


@dataclasses.dataclass
class Applied:
    before: onnx.ModelProto
    after: onnx.ModelProto
    model: ir.Model
    modified: bool
    error: float


def apply(
    pass_: ir.passes.PassBase,
    proto: onnx.ModelProto,
    *,
    tol: dict[str, float] | None = None,
    feeds: dict[str, np.ndarray] | None = None,
) -> Applied:
    """Run `pass_` on `proto` and check the contract every pass keeps:

    - the output passes onnx.checker's full check;
    - it computes the same function (onnxruntime CPU, optimizations off);
    - ``modified`` is True iff the serialized model changed;
    - a second run reports ``modified=False`` and changes nothing.
    """
    tol = tol or F32_TOL
    result = pass_(ir.from_proto(proto))
    after = ir.to_proto(result.model)
    onnx.checker.check_model(after, full_check=True)
    error = check_equivalent(proto, after, feeds=feeds, **tol)
    once = serialized(result.model)
    changed = once != serialized(ir.from_proto(proto))
    assert result.modified == changed, f"modified={result.modified} but changed={changed}"
    again = pass_(result.model)
    assert again.modified is False, "a second run still reports modified=True"
    assert serialized(again.model) == once, "a second run changed the model"
    return Applied(proto, after, result.model, result.modified, error)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def assert_refused(
    pass_: ir.passes.PassBase, proto: onnx.ModelProto, reason: str | None = None
) -> None:
    """The pass leaves the model exactly as it was, says so, and logs `reason`."""
    model = ir.from_proto(proto)
    before = serialized(model)
    records = _Records()
    logger = logging.getLogger("passes")
    old_level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        result = pass_(model)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert result.modified is False
    assert serialized(result.model) == before
    if reason is not None:
        assert any(reason in m for m in records.messages), records.messages


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def normal(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def bn_params(rng: np.random.Generator, channels: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """scale, bias, mean, var for a BatchNormalization of `channels` channels."""
    return {
        "scale": rng.uniform(0.5, 1.5, channels).astype(dtype),
        "bias": rng.standard_normal(channels).astype(dtype),
        "mean": rng.standard_normal(channels).astype(dtype),
        "var": rng.uniform(0.5, 2.0, channels).astype(dtype),
    }


@pytest.fixture
def kit() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        build=build,
        apply=apply,
        assert_refused=assert_refused,
        serialized=serialized,
        op_counts=op_counts,
        op_sequence=op_sequence,
        normal=normal,
        bn_params=bn_params,
        F32_TOL=F32_TOL,
        F64_TOL=F64_TOL,
    )
