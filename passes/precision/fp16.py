"""`Fp16Pass`: the pass object, its refusals and its summary (see `passes.precision`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.errors import PassInputError, PassOptionError
from passes.precision.emulate import emulate_float16_storage
from passes.precision.measure import OutputError, compare_outputs, measure
from passes.precision.ops import FLOAT, FLOAT16, Types, element_types
from passes.precision.options import FP16_MAX, Fp16Options
from passes.precision.plan import KeptNode, Measured, Plan, decide, display_name, static_plan
from passes.precision.rewrite import RewriteCounts, rewrite
from passes.quantize.data import CalibrationSource, CalibrationStream, model_inputs

__all__ = ["MARK", "Fp16Pass", "Fp16PassResult", "Fp16Summary", "NodeError"]

logger = logging.getLogger(__name__)

#: Model metadata key the pass sets to "fp16" on a model it converted: a second run
#: leaves such a model alone (modified=False).
MARK = "edgec.precision"


@dataclasses.dataclass(frozen=True)
class NodeError:
    """A converted node's measured float16 error (RMS error / RMS reference)."""

    name: str
    op_type: str
    error: float


@dataclasses.dataclass(frozen=True)
class Fp16Summary:
    """What `Fp16Pass` did, for the report (`as_dict` is JSON-ready).

    `converted`: nodes that compute in float16; `kept`: nodes kept float32, in graph
    order, each with its reason code (`passes.precision.plan`) and detail;
    `casts_inserted`, `constants_converted` (in place), `constants_copied` (a float16
    copy beside the float32 one); `outputs`: each graph output of the converted
    model, every float16 tensor stored in float16 (`emulate`: what a GPU computes;
    onnxruntime's CPU keeps some in float32), against float32 on the calibration
    data (empty with ``validate=False``);
    `largest_errors`: the converted nodes with the largest measured error;
    `warnings`: graph inputs/outputs that float16 I/O cannot hold; `note`: why
    nothing was converted, when nothing was.
    """

    converted: int
    kept: tuple[KeptNode, ...]
    casts_inserted: int
    constants_converted: int
    constants_copied: int
    keep_io_types: bool
    samples: int
    outputs: dict[str, OutputError]
    largest_errors: tuple[NodeError, ...]
    warnings: tuple[str, ...]
    note: str
    seconds: float
    options: dict[str, Any]

    def kept_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for k in self.kept:
            counts[k.reason] = counts.get(k.reason, 0) + 1
        return dict(sorted(counts.items()))

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kept_by_reason"] = self.kept_by_reason()
        return data


@dataclasses.dataclass
class Fp16PassResult(ir.passes.PassResult):
    """`PassResult(model, modified)` and the pass's `summary`."""

    summary: Fp16Summary


class Fp16Pass(ir.passes.InPlacePass):
    """Convert a float32 model to float16 where the calibration data says it is safe.

    `calibration`: feeds for the reference run, any `passes.quantize.data`
    `CalibrationSource` (an iterable of ``{input name: array}`` batches, arrays, a
    .npy/.npz path, a folder of images with `preprocess`, as PTQ takes); it is read
    twice (analysis, then the end-to-end comparison), `options.samples` samples at
    most. Raises `PassInputError` for a model it
    refuses (float16 already, nothing float32) or unusable data, `PassOptionError`
    for exclude names the model does not have.
    """

    def __init__(
        self,
        calibration: CalibrationSource,
        options: Fp16Options | None = None,
        *,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.calibration = calibration
        self.preprocess = preprocess
        self.options = options if options is not None else Fp16Options()
        if not isinstance(self.options, Fp16Options):
            raise PassOptionError(f"options must be Fp16Options, got {type(options).__name__}")

    def call(self, model: ir.Model) -> Fp16PassResult:
        start = time.perf_counter()
        options = self.options
        if model.metadata_props.get(MARK) == "fp16":
            logger.info("fp16: the model is already converted (metadata %s); unchanged", MARK)
            return self._unchanged(model, "already converted to float16 by this pass", start)
        types = element_types(model)
        _refuse(model, types, options)
        plan = static_plan(model, types, options)
        if not plan.fp16:
            return self._unchanged(model, "no node can compute in float16", start, plan)
        stream = CalibrationStream(
            self.calibration,
            model_inputs(model),
            samples=options.samples,
            batch_size=options.batch_size,
            preprocess=self.preprocess,
        )
        measured, reference = measure(model, plan, types, stream, options.threads)
        decide(plan, measured, options)
        if not plan.fp16:
            return self._unchanged(
                model, "every float node stays float32 on this data", start, plan, measured
            )
        warnings = _io_warnings(model, types, measured, options)
        counts = rewrite(model, plan, types, options.keep_io_types)
        model.metadata_props[MARK] = "fp16"
        outputs = (
            compare_outputs(emulate_float16_storage(model), stream, reference, options.threads)
            if options.validate
            else {}
        )
        summary = _summary(model, plan, measured, counts, outputs, warnings, options, start)
        logger.info(
            "fp16: %d nodes float16, %d kept float32 (%s), %d casts",
            summary.converted,
            len(summary.kept),
            summary.kept_by_reason(),
            summary.casts_inserted,
        )
        return Fp16PassResult(model, modified=True, summary=summary)

    def _unchanged(
        self,
        model: ir.Model,
        note: str,
        start: float,
        plan: Plan | None = None,
        measured: Measured | None = None,
    ) -> Fp16PassResult:
        kept = tuple(plan.kept.values()) if plan is not None else ()
        summary = Fp16Summary(
            converted=0,
            kept=_in_graph_order(model, plan) if plan is not None else kept,
            casts_inserted=0,
            constants_converted=0,
            constants_copied=0,
            keep_io_types=self.options.keep_io_types,
            samples=measured.samples if measured is not None else 0,
            outputs={},
            largest_errors=(),
            warnings=(),
            note=note,
            seconds=round(time.perf_counter() - start, 3),
            options=self.options.report(),
        )
        logger.info("fp16: unchanged: %s", note)
        return Fp16PassResult(model, modified=False, summary=summary)


def _refuse(model: ir.Model, types: Types, options: Fp16Options) -> None:
    half = [v.name for v, t in types.items() if t == FLOAT16]
    half += [
        n.name
        for n in graph_tools.graph_nodes(model)
        if graph_tools.is_std(n, "Cast") and n.attributes.get_int("to", 0) == FLOAT16.value
    ]
    if half:
        raise PassInputError(
            f"the model already has float16 tensors ({half[0]!r}); give the float32 model"
        )
    if not any(t == FLOAT for t in types.values()):
        raise PassInputError("the model has no float32 tensors: nothing to convert to float16")
    names = {n.name for n in model.graph}
    unknown = [name for name in options.exclude if name not in names]
    if unknown:
        raise PassOptionError(
            f"exclude names nodes the model does not have: {', '.join(map(repr, unknown[:5]))}"
        )


def _io_warnings(
    model: ir.Model, types: Types, measured: Measured, options: Fp16Options
) -> tuple[str, ...]:
    if options.keep_io_types:
        return ()
    found = []
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for v in values:
            peak = measured.value_max.get(v, 0.0)
            if types.get(v) == FLOAT and peak > FP16_MAX:
                found.append(
                    f"graph {kind} {v.name!r} reaches |x| = {peak:.4g}, beyond float16's range: "
                    "use keep_io_types"
                )
    return tuple(found)


def _in_graph_order(model: ir.Model, plan: Plan) -> tuple[KeptNode, ...]:
    return tuple(plan.kept[n] for n in model.graph if n in plan.kept)


def _summary(
    model: ir.Model,
    plan: Plan,
    measured: Measured,
    counts: RewriteCounts,
    outputs: dict[str, OutputError],
    warnings: tuple[str, ...],
    options: Fp16Options,
    start: float,
) -> Fp16Summary:
    errors = sorted(
        (
            NodeError(display_name(n), n.op_type, e)
            for n, e in measured.error.items()
            if n in plan.fp16
        ),
        key=lambda e: -e.error,
    )
    return Fp16Summary(
        converted=len(plan.fp16),
        kept=_in_graph_order(model, plan),
        casts_inserted=counts.casts,
        constants_converted=counts.constants_converted,
        constants_copied=counts.constants_copied,
        keep_io_types=options.keep_io_types,
        samples=measured.samples,
        outputs=outputs,
        largest_errors=tuple(errors[:5]),
        warnings=warnings,
        note="",
        seconds=round(time.perf_counter() - start, 3),
        options=options.report(),
    )
