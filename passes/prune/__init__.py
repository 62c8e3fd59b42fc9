"""Pruning passes: unstructured magnitude, structured channels, 2:4 semi-structured.

`finetune` (torch, imported on demand) prunes a torch module with the same
channel plan and recovers its accuracy by fine-tuning.
"""

from __future__ import annotations

from passes.prune.channel import PruneChannelsPass, plan_channel_pruning
from passes.prune.semi_structured import PruneSemiStructuredPass, validate_2_4
from passes.prune.unstructured import PruneUnstructuredPass, compressed_size, sparsity_summary

__all__ = [
    "PruneChannelsPass",
    "PruneSemiStructuredPass",
    "PruneUnstructuredPass",
    "compressed_size",
    "plan_channel_pruning",
    "sparsity_summary",
    "validate_2_4",
]
