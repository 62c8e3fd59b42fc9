"""Pruning passes: unstructured magnitude, structured channels, 2:4 semi-structured.

Each pass returns a `PrunePassResult` whose `summary` says what it pruned and
what it refused (see `result`).  `prune_pass(mode, ratio)` picks the pass for
one of `PRUNE_MODES`.  `finetune` (torch, imported on demand) prunes a torch
module with the same channel plan and recovers its accuracy by fine-tuning.
"""

from __future__ import annotations

import onnx_ir as ir

from passes.errors import PassOptionError
from passes.prune.channel import ChannelSummary, PruneChannelsPass, plan_channel_pruning
from passes.prune.result import PrunePassResult, PruneSummary
from passes.prune.semi_structured import (
    PruneSemiStructuredPass,
    SemiStructuredSummary,
    validate_2_4,
)
from passes.prune.unstructured import (
    PruneUnstructuredPass,
    UnstructuredSummary,
    compressed_size,
    sparsity_summary,
)

#: The pruning modes, as `--prune-mode` names them.
PRUNE_MODES = ("unstructured", "channel", "2:4")


def prune_pass(mode: str, ratio: float, *, round_to: int = 1) -> ir.passes.InPlacePass:
    """The graph pass for `mode` (2:4 has no ratio: it always prunes half of each group of 4)."""
    if mode == "unstructured":
        return PruneUnstructuredPass(ratio)
    if mode == "channel":
        return PruneChannelsPass(ratio, round_to=round_to)
    if mode == "2:4":
        return PruneSemiStructuredPass()
    raise PassOptionError(f"unknown pruning mode {mode!r}; use one of {', '.join(PRUNE_MODES)}")


__all__ = [
    "PRUNE_MODES",
    "ChannelSummary",
    "PruneChannelsPass",
    "PrunePassResult",
    "PruneSemiStructuredPass",
    "PruneSummary",
    "PruneUnstructuredPass",
    "SemiStructuredSummary",
    "UnstructuredSummary",
    "compressed_size",
    "plan_channel_pruning",
    "prune_pass",
    "sparsity_summary",
    "validate_2_4",
]
