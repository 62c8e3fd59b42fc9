"""The calibration run: value ranges and each node's own float16 error.

One pass over the calibration batches runs the float32 model with every
intermediate tensor fetched (the reference), and, on the same batch, one *check
model* in which every measured node stands alone: its inputs are the reference
tensors rounded to float16, its weights float16, and it computes in float16 (its
float16 form). A second copy computes in float32 on the same float16-rounded inputs
(the rounded-input error), so a node whose trouble is the rounding of its inputs
(not its own arithmetic) is told apart: keeping only it in float32 would not help.

Why per node and not the whole float16 model compared tensor by tensor: in a whole
float16 run each tensor carries the error of everything above it, so a threshold on
it keeps deep nodes that are not at fault and the decision depends on the order of
fallbacks (each fallback needs a new run). The per-node check attributes the error
to the node that makes it, in one run, all nodes at once (one session). Error that
several converted nodes amplify together shows in the end-to-end comparison that
the pass reports (`compare_outputs`); a caller with a budget adds names to
`Fp16Options.exclude`.

The error is that of onnxruntime's CPU kernels: several run float16 by computing in
float32 between float16 inputs and outputs, as GPU kernels (cuBLAS, cuDNN,
TensorRT) accumulate in float32 by default, so the measure is that of float16
storage with float32 accumulation. Ops that accumulate many terms are kept by op
type (`DEFAULT_KEEP_OP_TYPES`).

Ops that only move values (`ops.EXACT_OPS`) are not measured: their float16 result
is exact. A node onnxruntime cannot build in float16 is dropped from the check
model (and kept float32) with onnxruntime's message.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.errors import PassInputError
from passes.precision.ops import EXACT_OPS, FLOAT, FLOAT16, UNDEFINED, Types, float16_attributes
from passes.precision.plan import Measured, Plan

__all__ = ["OutputError", "compare_outputs", "measure"]

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class _Check:
    """The check model and how to feed it and read it."""

    model: ir.Model
    nodes: list[ir.Node]
    feeds: dict[str, str]  # input name -> reference value name
    outputs: dict[str, tuple[int, str, str]]  # output -> (node index, variant, reference name)


class _CheckBuilder:
    def __init__(self, types: Types) -> None:
        self.types = types
        self.inputs: list[ir.Value] = []
        self.initializers: list[ir.Value] = []
        self.nodes: list[ir.Node] = []
        self.feeds: dict[str, str] = {}
        self.outputs: list[ir.Value] = []
        self.read: dict[str, tuple[int, str, str]] = {}
        self._sources: dict[tuple[ir.Value, str], ir.Value] = {}

    def source(self, value: ir.Value, transform: str) -> ir.Value:
        """`value` as the check model reads it: its reference tensor (a graph input, or an
        initializer for a constant), through a Cast to float16 ("fp16") or to float16 and
        back ("rounded") inside the check model, or unchanged ("same")."""
        key = (value, transform)
        if key in self._sources:
            return self._sources[key]
        name = f"v{len(self._sources)}"
        array = graph_tools.constant(value)
        if array is not None:
            data = _transform(array, transform)
            source = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(data.dtype)))
            source.const_value = ir.tensor(data, name=name)
            self.initializers.append(source)
        elif transform == "same":
            source = ir.Value(name=name, type=ir.TensorType(self.types[value]))
            self.inputs.append(source)
            self.feeds[name] = value.name or ""
        else:
            before = "same" if transform == "fp16" else "fp16"
            upstream = self.source(value, before)
            name = f"v{len(self._sources)}"
            source = self._cast(upstream, FLOAT16 if transform == "fp16" else FLOAT, name)
        self._sources[key] = source
        return source

    def _cast(self, value: ir.Value, to: ir.DataType, name: str) -> ir.Value:
        cast = ir.Node("", "Cast", [value], [ir.AttrInt64("to", to.value)], name=f"cast.{name}")
        cast.outputs[0].name = name
        self.nodes.append(cast)
        return cast.outputs[0]

    def add(self, index: int, node: ir.Node, inputs: frozenset[int], variant: str) -> None:
        transform = "fp16" if variant == "fp16" else "rounded"
        args = [
            None if v is None else self.source(v, transform if i in inputs else "same")
            for i, v in enumerate(node.inputs)
        ]
        attrs = (
            float16_attributes(node)
            if variant == "fp16"
            else [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
        )
        copy = ir.Node(
            "", node.op_type, args, attrs, num_outputs=len(node.outputs), name=f"{index}.{variant}"
        )
        self.nodes.append(copy)
        for j, (out, original) in enumerate(zip(copy.outputs, node.outputs, strict=True)):
            out.name = f"{index}.{variant}.{j}"
            if original.name and self.types.get(original, UNDEFINED) != UNDEFINED:
                self.outputs.append(out)
                self.read[out.name] = (index, variant, original.name)

    def build(self, model: ir.Model, nodes: list[ir.Node]) -> _Check:
        graph = ir.Graph(
            self.inputs,
            self.outputs,
            nodes=self.nodes,
            initializers=self.initializers,
            opset_imports=dict(model.opset_imports),
            name="fp16_check",
        )
        return _Check(ir.Model(graph, ir_version=model.ir_version), nodes, self.feeds, self.read)


def _transform(array: np.ndarray, transform: str) -> np.ndarray:
    if transform == "same":
        return array
    with np.errstate(over="ignore"):  # values beyond float16's range become inf, as they would
        half = np.asarray(array).astype(np.float16)
    return half if transform == "fp16" else half.astype(np.float32)


def _check_model(model: ir.Model, nodes: list[ir.Node], plan: Plan, types: Types) -> _Check:
    builder = _CheckBuilder(types)
    for index, node in enumerate(nodes):
        inputs = plan.fp16[node].inputs
        builder.add(index, node, inputs, "fp16")
        if inputs:
            builder.add(index, node, inputs, "rounded")
    return builder.build(model, nodes)


_NODE_IN_MESSAGE = (
    re.compile(r"node with name '(\d+)\.\w+'"),
    re.compile(r"in node \((\d+)\.\w+\)"),
    re.compile(r"Node \((\d+)\.\w+\)"),
)


def _open_check(
    model: ir.Model, plan: Plan, types: Types, threads: int
) -> tuple[_Check | None, Any, dict[ir.Node, str]]:
    """The check model and its session, dropping the nodes onnxruntime cannot build."""
    nodes = [n for n in plan.fp16 if n.op_type not in EXACT_OPS]
    refused: dict[ir.Node, str] = {}
    while nodes:
        check = _check_model(model, nodes, plan, types)
        try:
            session = graph_tools.ort_session(graph_tools.model_bytes(check.model), threads=threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors name the node
            message = _first(e)
            index = next((int(m[1]) for p in _NODE_IN_MESSAGE if (m := p.search(message))), None)
            if index is None or index >= len(nodes):
                raise PassInputError(
                    f"onnxruntime cannot build the float16 check model: {message}"
                ) from None
            refused[nodes.pop(index)] = message[:200]
            continue
        return check, session, refused
    return None, None, refused


@dataclasses.dataclass
class _Errors:
    err: float = 0.0
    ref: float = 0.0
    broken: bool = False
    differ: int = 0
    count: int = 0

    def add(self, out: np.ndarray, ref: np.ndarray) -> None:
        if out.shape != ref.shape:
            self.broken = True
            return
        if not np.issubdtype(ref.dtype, np.floating):
            self.differ += int(np.count_nonzero(out != ref))
            self.count += ref.size
            return
        o, r = out.astype(np.float32, copy=False).ravel(), ref.astype(np.float32).ravel()
        if not np.isfinite(r).all():  # inf/nan in the reference must be reproduced exactly
            finite = np.isfinite(r)
            same = (o[~finite] == r[~finite]) | (np.isnan(o[~finite]) & np.isnan(r[~finite]))
            self.broken |= not bool(same.all())
            o, r = o[finite], r[finite]
        if not np.isfinite(o).all():
            self.broken = True
            return
        d = o - r
        # float32 dot products (BLAS): two significant digits are all the decision needs
        self.err += float(np.dot(d, d))
        self.ref += float(np.dot(r, r))

    def relative(self) -> float:
        if self.broken:
            return math.inf
        mismatch = self.differ / self.count if self.count else 0.0
        if self.ref > 0:
            return max(mismatch, math.sqrt(self.err / self.ref))
        return mismatch if self.err == 0 else math.inf


def _first(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def _peak(array: np.ndarray) -> float:
    finite = np.abs(array[np.isfinite(array)])
    return float(finite.max()) if finite.size else 0.0


def measure(
    model: ir.Model, plan: Plan, types: Types, batches: Iterable[Batch], threads: int
) -> tuple[Measured, list[Batch]]:
    """Run the reference and check models over `batches` (module docstring); returns the
    measurements and the reference graph outputs of each batch."""
    fetch = [
        v.name
        for node in model.graph
        for v in node.outputs
        if v.name and types.get(v, UNDEFINED) != UNDEFINED
    ]
    try:
        reference = graph_tools.ort_session(graph_tools.model_bytes(model, fetch), threads=threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own message says why
        raise PassInputError(f"onnxruntime cannot load the float32 model: {_first(e)}") from None
    check, session, refused = _open_check(model, plan, types, threads)
    floats = {v.name: v for v in types if types[v] == FLOAT and v.name}
    value_max = {
        v: _peak(a)
        for v in floats.values()
        if v.const_value is not None and (a := graph_tools.constant(v)) is not None
    }
    errors: dict[tuple[int, str, str], _Errors] = {}
    outputs: list[Batch] = []
    samples = 0
    for feeds in batches:
        try:
            ref = dict(zip(fetch, reference.run(fetch, feeds), strict=True))
        except Exception as e:  # noqa: BLE001 - onnxruntime's own message says why
            raise PassInputError(
                f"the float32 model fails on the calibration data: {_first(e)}"
            ) from None
        ref.update(feeds)
        outputs.append({v.name: ref[v.name] for v in model.graph.outputs if v.name in ref})
        samples += next(iter(feeds.values())).shape[0]
        for name, array in ref.items():
            if name in floats:
                value = floats[name]
                value_max[value] = max(value_max.get(value, 0.0), _peak(array))
        if check is not None:
            _run_check(check, session, ref, errors)
    if not samples:
        raise PassInputError("the calibration data held no samples")
    measured = Measured(value_max, {}, {}, refused, samples)
    if check is not None:
        for (index, variant, _), acc in errors.items():
            table = measured.error if variant == "fp16" else measured.rounded_error
            node = check.nodes[index]
            table[node] = max(table.get(node, 0.0), acc.relative())
    return measured, outputs


def _run_check(
    check: _Check, session: Any, ref: Mapping[str, np.ndarray], errors: dict[Any, _Errors]
) -> None:
    feeds = {name: ref[source] for name, source in check.feeds.items()}
    names = list(check.outputs)
    for name, out in zip(names, session.run(names, feeds), strict=True):
        index, variant, source = check.outputs[name]
        errors.setdefault((index, variant, source), _Errors()).add(out, ref[source])


@dataclasses.dataclass(frozen=True)
class OutputError:
    """A graph output of the converted model against the float32 model on the
    calibration data: cosine similarity, largest absolute error, RMS error / RMS
    reference, and (outputs of shape (N, C)) top-1 agreement of the argmax over C;
    integer/bool outputs report the fraction of equal elements as `agreement`."""

    cosine: float | None
    max_abs_error: float
    relative_error: float
    agreement: float | None


def compare_outputs(
    model: ir.Model, batches: Iterable[Batch], reference: list[Batch], threads: int
) -> dict[str, OutputError]:
    """Run the converted `model` on `batches` and compare with the float32 `reference`."""
    session = graph_tools.ort_session(graph_tools.model_bytes(model), threads=threads)
    half = {v.name for v in model.graph.inputs if v.dtype == FLOAT16}
    names = [v.name or "" for v in model.graph.outputs]
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    want: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds, ref in zip(batches, reference, strict=True):
        feeds = {k: _transform(a, "fp16") if k in half else a for k, a in feeds.items()}
        for name, out in zip(names, session.run(names, feeds), strict=True):
            if name in ref:
                got[name].append(out)
                want[name].append(ref[name])
    return {n: _output_error(got[n], want[n]) for n in names if want[n]}


def _output_error(got: list[np.ndarray], want: list[np.ndarray]) -> OutputError:
    if not np.issubdtype(want[0].dtype, np.floating):
        same = sum(int(np.count_nonzero(g == w)) for g, w in zip(got, want, strict=True))
        total = sum(w.size for w in want)
        return OutputError(None, 0.0, 0.0, same / total if total else 1.0)
    o = np.concatenate([g.astype(np.float64).ravel() for g in got])
    r = np.concatenate([w.astype(np.float64).ravel() for w in want])
    d = o - r
    norm = float(np.linalg.norm(o) * np.linalg.norm(r))
    cosine = float(o @ r) / norm if norm > 0 else (1.0 if not d.any() else 0.0)
    ref_rms = float(np.sqrt(np.mean(r * r))) if r.size else 0.0
    relative = float(np.sqrt(np.mean(d * d))) / ref_rms if ref_rms > 0 else 0.0
    agreement = None
    if all(w.ndim == 2 and w.shape[1] > 1 for w in want):
        top = [(g.argmax(1) == w.argmax(1)) for g, w in zip(got, want, strict=True)]
        agreement = float(np.concatenate(top).mean())
    max_abs = float(np.abs(d).max()) if d.size else 0.0
    return OutputError(round(cosine, 7), max_abs, relative, agreement)
