"""Numerical equivalence check between a model and its transformed version.

`check_equivalent(before, after)` runs both models with onnxruntime's CPU
provider, graph optimizations disabled (ORT_DISABLE_ALL, so onnxruntime's own
fusions cannot hide or cause a difference), on the same random inputs, and
compares every output with ``numpy.allclose(after, before, rtol, atol)``.

Inputs are drawn from the declared input types of `before`:

- a symbolic or unknown dim is `batch` when it first appears on axis 0 and
  `_OTHER_DYNAMIC_DIM` elsewhere; the same symbolic name always gets the same size,
  so inputs that share a dim stay consistent;
- floats are standard normal, integers are small non-negative (0..3, valid as
  indices into most axes), bools are fair coin flips.

Pass `feeds` to supply the inputs yourself (strings, or integers that must index a
specific range); an input type it cannot draw raises `PassInputError`. The function returns the largest absolute error over all outputs
and raises `PassChangedFunction` when an output is not close, naming the worst one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

from compiler.ground.sessions import open_session, session_options
from passes.errors import PassInputError

__all__ = ["PassChangedFunction", "check_equivalent"]

_OTHER_DYNAMIC_DIM = 4

_ORT_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class PassChangedFunction(AssertionError):
    """A transformed model no longer computes what the original computed.

    This is a bug in the pass that produced `after`: rerun without that pass and
    report the model that triggered it.
    """


def _serialize(model: onnx.ModelProto | ir.Model) -> bytes:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString()


def _session(data: bytes, which: str):
    try:
        return open_session(data, session_options(threads=1, level="none"))
    except Exception as e:
        raise PassChangedFunction(
            f"onnxruntime cannot load the {which} model: {type(e).__name__}: {e}"
        ) from e


def _random_feeds(session, *, seed: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise PassInputError(
                f"cannot make a random value for input {arg.name!r} of type {arg.type}; "
                "pass it in `feeds`"
            )
        shape = []
        for axis, dim in enumerate(arg.shape):
            if isinstance(dim, int) and dim >= 0:
                shape.append(dim)
                continue
            key = dim if isinstance(dim, str) and dim else f"{arg.name}:{axis}"
            if key not in sizes:
                sizes[key] = batch if axis == 0 else _OTHER_DYNAMIC_DIM
            shape.append(sizes[key])
        if np.issubdtype(dtype, np.floating):
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            value = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            value = rng.integers(0, 4, size=shape).astype(dtype)
        feeds[arg.name] = value
    return feeds


def check_equivalent(
    before: onnx.ModelProto | ir.Model,
    after: onnx.ModelProto | ir.Model,
    *,
    seed: int = 0,
    batch: int = 2,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> float:
    """Run `before` and `after` on the same inputs and return the max absolute error.

    Raises:
        PassInputError: an input has a type it cannot draw (pass it in `feeds`).
        PassChangedFunction: an output differs beyond ``atol + rtol * |before|``, the
            outputs differ in number, shape or dtype, or `after` does not load.
    """
    sess_before = _session(_serialize(before), "original")
    sess_after = _session(_serialize(after), "transformed")
    if feeds is None:
        inputs = _random_feeds(sess_before, seed=seed, batch=batch)
    else:
        inputs = dict(feeds)

    names_before = [o.name for o in sess_before.get_outputs()]
    names_after = [o.name for o in sess_after.get_outputs()]
    if len(names_before) != len(names_after):
        raise PassChangedFunction(
            f"the transformed model has {len(names_after)} outputs, the original "
            f"{len(names_before)} ({names_before} vs {names_after})"
        )
    after_input_names = {i.name for i in sess_after.get_inputs()}
    missing = after_input_names - inputs.keys()
    if missing:
        raise PassChangedFunction(
            f"the transformed model needs inputs the original does not have: {sorted(missing)}"
        )
    expected = sess_before.run(None, inputs)
    actual = sess_after.run(None, {k: v for k, v in inputs.items() if k in after_input_names})

    worst_error, worst_name, worst_bad = 0.0, None, False
    for name, want, got in zip(names_before, expected, actual, strict=True):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape or want.dtype != got.dtype:
            raise PassChangedFunction(
                f"output {name!r} changed from {want.dtype}{list(want.shape)} to "
                f"{got.dtype}{list(got.shape)}"
            )
        if want.size == 0:
            continue
        if want.dtype == np.bool_ or not np.issubdtype(want.dtype, np.number):
            bad = not np.array_equal(want, got)
            error = float(np.count_nonzero(want != got))
        else:
            w, g = want.astype(np.float64), got.astype(np.float64)
            bad = not np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            with np.errstate(invalid="ignore"):
                diff = np.abs(g - w)
            both_nan = np.isnan(w) & np.isnan(g)
            diff = np.where(both_nan, 0.0, diff)
            error = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
        if (bad, error) > (worst_bad, worst_error):
            worst_error, worst_name, worst_bad = error, name, bad
    if worst_bad:
        raise PassChangedFunction(
            f"output {worst_name!r} differs after the transformation: max abs error "
            f"{worst_error:.3g} exceeds atol={atol:g} + rtol={rtol:g}*|expected| "
            f"(seed={seed}, batch={batch})"
        )
    return worst_error
