"""The ONNX conformance run: every ONNX backend node test case through our passes.

The `onnx` package ships about 1,900 small models (one per operator variant), each
with inputs and the outputs the ONNX reference computes. For each case,
`run_conformance` does:

1. **Baseline.** Run the original model with onnxruntime's CPU provider (graph
   optimizations off, one thread) on the case's inputs and compare with the
   expected outputs at the case's own tolerances (``rtol``/``atol`` from the
   test case, as ONNX's backend runner does). When onnxruntime cannot load or
   run the model, or disagrees with the reference, the case is *skipped* with
   that reason: it is onnxruntime's limitation, not ours.
2. **Ours.** Run the cleanup + fusion pipeline (`compiler.stages.optimize.optimize`) on
   ``ir.from_proto(model)``, run the result in onnxruntime on the same inputs
   and compare with the *original's onnxruntime outputs*: same count, dtype and
   shape; integers, bools and strings exactly equal; floats within
   ``rtol=1e-4, atol=1e-5`` (`FLOAT_RTOL`, `FLOAT_ATOL`), float16 within
   ``rtol=atol=1e-3`` (about one float16 ulp at 1.0: onnxsim's folding of a float16
   graph moves roundings), with NaNs in the same places. Anything else — a pass raising, the result failing to load or run,
   an output that differs — is a *failure*: a bug in a pass.

Version stamping (documented because it edits the test models): onnx 1.23 writes
IR version 14 and opset 28 into its newest cases, while onnxruntime 1.31 loads
IR <= 13 and officially supports ai.onnx opset <= 26. Such a model is stamped
down (``ir_version`` to onnxruntime's maximum; the ai.onnx opset to onnxruntime's
maximum) only when no node's operator has a schema newer than the new opset —
i.e. every node means exactly what it meant before. Otherwise the case is skipped
("needs an opset newer than onnxruntime supports").

Cases whose outputs are random (RandomNormal, Bernoulli, ...) and cases whose
inputs or outputs use types numpy/onnxruntime's Python API cannot carry (float8,
int4, bfloat16...) are skipped up front, each with its own reason.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from compiler.ground.sessions import open_session, session_options
from compiler.ir_version import ORT_MAX_IR_VERSION

log = logging.getLogger(__name__)

#: Tolerances for comparing our optimized model's float outputs with the original's.
FLOAT_RTOL = 1e-4
FLOAT_ATOL = 1e-5
#: ... and for float16 outputs (float16's epsilon is 9.8e-4).
FLOAT16_RTOL = 1e-3
FLOAT16_ATOL = 1e-3

#: onnxruntime 1.31 officially supports the ai.onnx domain up to this opset
#: (and loads IR versions up to `compiler.ir_version.ORT_MAX_IR_VERSION`).
ORT_MAX_OPSET = 26

#: Operators whose outputs are random: no reference to compare with.
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Bernoulli",
        "Multinomial",
    }
)

# Skip reasons (the keys of ConformanceResult.skipped).
SKIP_TYPES = "input or output type not representable in onnxruntime's Python API"
SKIP_RANDOM = "random outputs (no reference to compare with)"
SKIP_OPSET = "needs an opset newer than onnxruntime supports"
SKIP_ORT_LOAD = "onnxruntime cannot load the original"
SKIP_ORT_RUN = "onnxruntime cannot run the original"
SKIP_ORT_DISAGREES = "onnxruntime disagrees with reference"

#: progress(done, total, case_name)
Progress = Callable[[int, int, str], None]


@dataclass
class ConformanceResult:
    """What a conformance run did: counts, failures with reasons, skips by reason."""

    total: int = 0
    run: int = 0
    passed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(names) for reason, names in sorted(self.skipped.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "run": self.run,
            "passed": self.passed,
            "failed": len(self.failed),
            "failures": [{"case": n, "reason": r} for n, r in self.failed],
            "skipped": sum(len(v) for v in self.skipped.values()),
            "skipped_by_reason": self.skipped_counts,
            "seconds": round(self.seconds, 1),
            "tolerance": {
                "float": {"rtol": FLOAT_RTOL, "atol": FLOAT_ATOL},
                "float16": {"rtol": FLOAT16_RTOL, "atol": FLOAT16_ATOL},
                "other": "exact",
            },
        }


@functools.lru_cache(maxsize=1)
def node_test_cases() -> tuple[Any, ...]:
    """ONNX's backend node test cases (collected once per process: about 10 s)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        with np.errstate(all="ignore"):
            cases = collect_testcases(None)
    return tuple(sorted(cases, key=lambda c: c.name))


def case_names() -> list[str]:
    return [c.name for c in node_test_cases()]


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _onnx_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _stamp_down(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy onnxruntime will load: IR and ai.onnx opset lowered when that is exact."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = min(model.ir_version, ORT_MAX_IR_VERSION)
    version = _onnx_opset(model)
    if version is None or version <= ORT_MAX_OPSET:
        return model
    nodes = list(_all_nodes(model.graph))
    for f in model.functions:
        nodes.extend(f.node)
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            newest = onnx.defs.get_schema(node.op_type, version, "").since_version
            lowered = onnx.defs.get_schema(node.op_type, ORT_MAX_OPSET, "").since_version
        except onnx.defs.SchemaError:
            raise _Skip(
                SKIP_OPSET, f"{node.op_type} has no schema at opset {ORT_MAX_OPSET}"
            ) from None
        if newest != lowered:
            raise _Skip(SKIP_OPSET, f"{node.op_type}-{newest}")
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = ORT_MAX_OPSET
    for f in model.functions:
        for o in f.opset_import:
            if o.domain in ("", "ai.onnx") and o.version > ORT_MAX_OPSET:
                o.version = ORT_MAX_OPSET
    return model


def _to_feed(value: Any) -> Any:
    if isinstance(value, onnx.TensorProto):
        raise _Skip(SKIP_TYPES, onnx.TensorProto.DataType.Name(value.data_type))
    if isinstance(value, list):
        return [_to_feed(v) for v in value]
    if value is None:
        return None
    return np.asarray(value)


def _session(data: bytes):
    return open_session(data, session_options(threads=1, level="none", log_severity=4))


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)


def compare(
    want: Any,
    got: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    path: str = "output",
) -> str | None:
    """None when `got` matches `want`, else a one-line reason.

    Same structure (sequences element by element), dtype and shape; floats within
    ``atol + rtol * |want|`` with NaNs in the same places and infinities equal;
    everything else (ints, bools, strings) exactly equal. Without `rtol`/`atol`,
    the tolerance follows the dtype: `FLOAT16_RTOL`/`FLOAT16_ATOL` for float16,
    `FLOAT_RTOL`/`FLOAT_ATOL` otherwise.
    """
    if isinstance(want, list) or isinstance(got, list):
        if not (isinstance(want, list) and isinstance(got, list)) or len(want) != len(got):
            return f"{path}: sequence length/kind differs"
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            reason = compare(w, g, rtol=rtol, atol=atol, path=f"{path}[{i}]")
            if reason:
                return reason
        return None
    if want is None or got is None:
        return None if want is None and got is None else f"{path}: optional presence differs"
    w, g = np.asarray(want), np.asarray(got)
    if w.dtype != g.dtype and not (w.dtype.kind in "OUS" and g.dtype.kind in "OUS"):
        return f"{path}: dtype {g.dtype}, expected {w.dtype}"
    if w.shape != g.shape:
        return f"{path}: shape {g.shape}, expected {w.shape}"
    if w.size == 0:
        return None
    if _is_float(w):
        half = w.dtype == np.float16
        if rtol is None:
            rtol = FLOAT16_RTOL if half else FLOAT_RTOL
        if atol is None:
            atol = FLOAT16_ATOL if half else FLOAT_ATOL
        w64, g64 = (
            w.astype(np.complex128 if w.dtype.kind == "c" else np.float64),
            g.astype(np.complex128 if g.dtype.kind == "c" else np.float64),
        )
        if not np.array_equal(np.isnan(w64), np.isnan(g64)):
            return f"{path}: NaN positions differ"
        if not np.allclose(g64, w64, rtol=rtol, atol=atol, equal_nan=True):
            finite = np.isfinite(w64) & np.isfinite(g64)
            err = float(np.max(np.abs(g64 - w64)[finite])) if finite.any() else float("inf")
            return f"{path}: max abs error {err:.3g} over atol={atol:g} + rtol={rtol:g}*|expected|"
        return None
    if w.dtype.kind in "OUS":
        equal = w.astype(object).tolist() == g.astype(object).tolist()
    else:
        equal = bool(np.array_equal(w, g))
    return None if equal else f"{path}: {int(np.count_nonzero(w != g))} elements differ"


def _compare_all(
    want: Sequence[Any],
    got: Sequence[Any],
    names: Sequence[str],
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> str | None:
    if len(want) != len(got):
        return f"{len(got)} outputs, expected {len(want)}"
    for name, w, g in zip(names, want, got, strict=True):
        reason = compare(w, g, rtol=rtol, atol=atol, path=f"output {name!r}")
        if reason:
            return reason
    return None


def run_case(case: Any) -> tuple[str, str]:
    """One case: ("passed", ""), ("skipped", reason) or ("failed", reason)."""
    try:
        return _run_case(case)
    except _Skip as s:
        return "skipped", s.reason


def _run_case(case: Any) -> tuple[str, str]:
    import onnx_ir as ir

    from compiler.stages.optimize import optimize

    model: onnx.ModelProto = case.model
    if any(n.op_type in RANDOM_OPS for n in _all_nodes(model.graph)):
        raise _Skip(SKIP_RANDOM)
    raw_inputs, expected = case.data_sets[0]
    feeds_list = [_to_feed(v) for v in raw_inputs]
    expected = [_to_feed(v) for v in expected]
    model = _stamp_down(model)
    try:
        original = _session(model.SerializeToString())
    except Exception:
        raise _Skip(SKIP_ORT_LOAD) from None
    input_names = [i.name for i in original.get_inputs()]
    output_names = [o.name for o in original.get_outputs()]
    if len(input_names) != len(feeds_list):
        # Optional inputs given as "" are not graph inputs; match by the model's own names.
        graph_inputs = [i.name for i in model.graph.input]
        feeds = {n: v for n, v in zip(graph_inputs, feeds_list, strict=False) if n in input_names}
    else:
        feeds = dict(zip(input_names, feeds_list, strict=True))
    try:
        with np.errstate(all="ignore"):
            baseline = original.run(None, feeds)
    except Exception:
        raise _Skip(SKIP_ORT_RUN) from None
    if _compare_all(expected, baseline, output_names, rtol=float(case.rtol), atol=float(case.atol)):
        raise _Skip(SKIP_ORT_DISAGREES)

    try:
        with _native_output_silenced():
            optimized, _ = optimize(ir.from_proto(model))
        data = ir.to_proto(optimized).SerializeToString()
    except Exception as e:
        return "failed", f"the pipeline raised {_one_line(e)}"
    try:
        ours = _session(data)
    except Exception as e:
        return "failed", f"onnxruntime cannot load the optimized model: {_one_line(e)}"
    our_inputs = {i.name for i in ours.get_inputs()}
    if not our_inputs <= feeds.keys():
        return "failed", f"the optimized model needs new inputs {sorted(our_inputs - feeds.keys())}"
    try:
        with np.errstate(all="ignore"):
            got = ours.run(None, {k: v for k, v in feeds.items() if k in our_inputs})
    except Exception as e:
        return "failed", f"onnxruntime cannot run the optimized model: {_one_line(e)}"
    reason = _compare_all(baseline, got, output_names)
    if reason:
        return "failed", reason
    return "passed", ""


@contextlib.contextmanager
def _native_output_silenced() -> Any:
    """Send file descriptors 1 and 2 to /dev/null: onnxsim's C++ core prints a warning
    line for every node it cannot fold, which would bury a run's own output."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the passes' and onnx-ir's warnings (onnxsim falls back on many odd models,
    shape inference fails on some) and numpy's."""
    loggers = [logging.getLogger(name) for name in ("passes", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_conformance(
    filter: Callable[[str], bool] | str | None = None,  # noqa: A002 - the documented name
    progress: Progress | None = None,
) -> ConformanceResult:
    """Run every ONNX node test case (or those `filter` accepts) through our passes.

    `filter` is a predicate on the case name or a regular expression searched in it.
    See the module docstring for what passes, fails and is skipped.
    """
    if isinstance(filter, str):
        pattern = re.compile(filter)
        accept: Callable[[str], bool] = lambda name: bool(pattern.search(name))  # noqa: E731
    else:
        accept = filter or (lambda name: True)
    t0 = time.perf_counter()
    cases = [c for c in node_test_cases() if accept(c.name)]
    result = ConformanceResult(total=len(cases))
    with _quiet():
        for i, case in enumerate(cases):
            status, reason = run_case(case)
            if status == "skipped":
                result.skipped.setdefault(reason, []).append(case.name)
            else:
                result.run += 1
                if status == "passed":
                    result.passed += 1
                else:
                    result.failed.append((case.name, reason))
                    log.warning("conformance: %s failed: %s", case.name, reason)
            if progress is not None:
                progress(i + 1, len(cases), case.name)
    result.seconds = time.perf_counter() - t0
    return result


def shard(index: int, count: int) -> Callable[[str], bool]:
    """A filter selecting a stable 1/count of the cases (by position in the sorted list)."""
    names = {n: i for i, n in enumerate(case_names())}
    return lambda name: names.get(name, -1) % count == index


def main() -> int:  # pragma: no cover - a developer entry point
    import json
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    pattern = sys.argv[1] if len(sys.argv) > 1 else None
    result = run_conformance(pattern)
    json.dump(result.to_dict(), sys.stdout, indent=2)
    print()
    return 1 if result.failed else 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
