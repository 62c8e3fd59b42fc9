"""What a pruning pass returns: onnx-ir's `PassResult` plus a typed summary.

Every pruning pass returns a `PrunePassResult` whose `summary` says what it did
(`UnstructuredSummary`, `ChannelSummary` or `SemiStructuredSummary`, each in its
pass's module).  A summary's `as_dict()` is the report's `pruning` section, less
the mode, ratio and fine-tuning story that the pruning stage adds around it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, Protocol, TypeVar

import onnx_ir as ir


class PruneSummary(Protocol):
    """A pruning pass's account of what it did, as plain data for the report."""

    def as_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=PruneSummary)


@dataclasses.dataclass
class PrunePassResult(ir.passes.PassResult, Generic[S]):
    """`PassResult(model, modified)` and the pass's `summary`."""

    summary: S
