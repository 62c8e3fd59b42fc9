"""A pass wrapper that records what each pass did, for the report.

The pipeline hands a list of these to onnx-ir's PassManager; each wrapper times
its inner pass, counts nodes before and after, and (with --verify) checks with
onnxruntime that the pass kept the function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import onnx_ir as ir
import onnx_ir.passes as irp


@dataclass
class PassRecord:
    name: str
    changed: bool
    nodes_before: int
    nodes_after: int
    seconds: float
    max_abs_error: float | None = None
    #: how often each rule set matched, for the passes that apply rewrite rules (else None)
    matches: dict[str, int] | None = None

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        return d


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


Verifier = Callable[[ir.Model, ir.Model, str], float]


class RecordingPass(irp.PassBase):
    """Runs `inner`, appends a PassRecord to `records`, optionally verifies numerically.

    It returns the inner pass's own result object, so a `PassResult` subclass
    (a pruning pass's `PrunePassResult` with its summary) reaches the caller intact.
    """

    def __init__(
        self,
        inner: irp.PassBase,
        records: list[PassRecord],
        *,
        verifier: Verifier | None = None,
        name: str | None = None,
    ) -> None:
        self.inner = inner
        self.records = records
        self.verifier = verifier
        self.name = name or type(inner).__name__

    @property
    def in_place(self) -> bool:
        return self.inner.in_place

    @property
    def changes_input(self) -> bool:
        return self.inner.changes_input

    def call(self, model: ir.Model) -> irp.PassResult:
        before_copy = _clone(model) if self.verifier is not None else None
        nodes_before = count_nodes(model)
        t0 = time.perf_counter()
        result = self.inner(model)
        seconds = time.perf_counter() - t0
        err = None
        if self.verifier is not None and result.modified and before_copy is not None:
            err = self.verifier(before_copy, result.model, self.name)
        self.records.append(
            PassRecord(
                name=self.name,
                changed=bool(result.modified),
                nodes_before=nodes_before,
                nodes_after=count_nodes(result.model),
                seconds=seconds,
                max_abs_error=err,
                matches=_matches(result),
            )
        )
        return result


def _matches(result: irp.PassResult) -> dict[str, int] | None:
    """A rule-set pass's match counts (its result carries `matches`); None for other passes."""
    matches = getattr(result, "matches", None)
    return dict(matches) if isinstance(matches, dict) else None


def _clone(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))
