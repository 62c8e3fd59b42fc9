"""2:4 semi-structured sparsity for TensorRT's sparse tensor cores.

Rewrite: for each eligible weight, split the reduction (input-channel) axis
into groups of 4 consecutive entries — for every output channel and, for a
conv, every kernel position — and zero the 2 smallest magnitudes of each group
(ties broken by position).  The model is then marked with
`metadata_props["edgec.sparsity"] = "2:4"` so the TensorRT target builds with
`BuilderFlag.SPARSE_WEIGHTS`; TensorRT still decides per layer, by timing,
whether the sparse kernel wins.

The layout rule we follow is TensorRT's structured-sparsity requirement as we
understand it from the TensorRT developer guide ("Structured Sparsity"); it
could not be re-checked against the current guide while writing this, so it is
stated here as an assumption:
  * Convolution, kernel weights [K, C, R, S]: for every output channel k and
    every kernel position (r, s), each 4 consecutive input channels
    C[4i : 4i+4] hold at most 2 non-zeros.  We require C % 4 == 0 and group == 1.
  * Fully connected / MatMul with constant weights: for every output feature,
    each 4 consecutive input features (the reduction axis K) hold at most 2
    non-zeros.  We require K % 4 == 0.
  * Sparse tensor cores need an Ampere-or-newer GPU and FP16/INT8 (or TF32)
    math; FP32 engines and older GPUs simply ignore the flag.
Refused (left dense): grouped and depthwise convolutions (no sparse kernels),
reduction axes not divisible by 4, weights with fewer than `min_size` elements,
non-float, shared or non-constant weights.

Idempotence: a weight that already satisfies 2:4 is left untouched (the 2
smallest of each group are already zero), and the metadata is only written
when it differs, so a second run reports `modified=False`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from passes.graph_tools import WeightSlot, constant_initializer, set_initializer, weight_slot
from passes.prune.result import PrunePassResult

logger = logging.getLogger(__name__)

SPARSITY_KEY = "edgec.sparsity"
SPARSITY_2_4 = "2:4"


def _groups_of_4(tensor: np.ndarray, axis: int) -> np.ndarray:
    """View as [..., groups, 4] with the 4 consecutive entries of `axis` last."""
    moved = np.moveaxis(tensor, axis, -1)
    if moved.shape[-1] % 4:
        raise ValueError(f"axis {axis} has size {moved.shape[-1]}, not a multiple of 4")
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4)


def validate_2_4(tensor: np.ndarray, axis: int) -> bool:
    """True when every 4 consecutive entries along `axis` hold at most 2 non-zeros.

    A size along `axis` that is not a multiple of 4 is not 2:4 (returns False).
    """
    tensor = np.asarray(tensor)
    if tensor.ndim == 0 or tensor.shape[axis] % 4:
        return False
    return bool(np.all(np.count_nonzero(_groups_of_4(tensor, axis), axis=-1) <= 2))


def prune_2_4(tensor: np.ndarray, axis: int) -> np.ndarray:
    """Zero the 2 smallest |w| of every 4 consecutive entries along `axis`."""
    tensor = np.asarray(tensor)
    groups = _groups_of_4(tensor, axis)
    order = np.argsort(np.abs(groups), axis=-1, kind="stable")
    drop = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(drop, order[..., :2], True, axis=-1)
    pruned = np.where(drop, np.zeros((), tensor.dtype), groups)
    moved_shape = np.moveaxis(tensor, axis, -1).shape
    return np.moveaxis(pruned.reshape(moved_shape), -1, axis)


def eligible_2_4(slot: WeightSlot, *, min_size: int = 0) -> str | None:
    """None when the weight can take the 2:4 pattern, else why not."""
    arr = constant_initializer(slot.value)
    if arr is None:
        return "not a constant initializer"
    if not np.issubdtype(arr.dtype, np.floating):
        return f"dtype {arr.dtype} is not floating point"
    if len(slot.value.uses()) != 1:
        return "shared weight"
    if slot.group != 1:
        return "grouped or depthwise convolution"
    k = arr.shape[slot.reduce_axis]
    if k % 4:
        return f"reduction axis has {k} channels, not a multiple of 4"
    if arr.size < min_size:
        return f"{arr.size} elements < min_size {min_size}"
    return None


@dataclasses.dataclass(frozen=True)
class SemiStructuredSummary:
    """What `PruneSemiStructuredPass` did: the 2:4 layers and the refused ones with reasons."""

    layers: Mapping[str, Mapping[str, Any]]
    refused: Mapping[str, str]
    pattern: str = SPARSITY_2_4

    def as_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "layers": {k: dict(v) for k, v in self.layers.items()},
            "refused": dict(self.refused),
        }


class PruneSemiStructuredPass(ir.passes.InPlacePass):
    """Enforce 2:4 sparsity on eligible weights and mark the model for TensorRT.

    The result's `summary` lists the pruned layers and the refused ones with reasons.
    """

    def __init__(self, *, min_size: int = 0) -> None:
        super().__init__()
        self.min_size = min_size

    def call(self, model: ir.Model) -> PrunePassResult[SemiStructuredSummary]:
        modified = False
        layers: dict[str, dict[str, Any]] = {}
        refused: dict[str, str] = {}
        for node in model.graph:
            slot = weight_slot(node)
            if slot is None:
                continue
            name = slot.value.name or node.name or "<unnamed>"
            reason = eligible_2_4(slot, min_size=self.min_size)
            if reason is not None:
                refused[name] = reason
                continue
            arr = constant_initializer(slot.value)
            assert arr is not None  # eligible_2_4 checked it
            if not validate_2_4(arr, slot.reduce_axis):
                set_initializer(slot.value, prune_2_4(arr, slot.reduce_axis))
                modified = True
            w = constant_initializer(slot.value)
            assert w is not None
            layers[name] = {
                "node": node.name,
                "op": node.op_type,
                "axis": slot.reduce_axis,
                "params": int(w.size),
                "sparsity": round(1 - np.count_nonzero(w) / w.size, 6),
            }
        if layers and model.metadata_props.get(SPARSITY_KEY) != SPARSITY_2_4:
            model.metadata_props[SPARSITY_KEY] = SPARSITY_2_4
            modified = True
        logger.info("2:4 sparsity: %d layers, %d refused", len(layers), len(refused))
        return PrunePassResult(model, modified, SemiStructuredSummary(layers, refused))
