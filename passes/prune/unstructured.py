"""Unstructured magnitude pruning of Conv/Gemm/MatMul weights, and compressed size.

Rewrite: for every eligible weight initializer W, set the k smallest |W| to
exactly 0.0, where k = floor(ratio * n) per layer (`scope="layer"`), or the
k = floor(ratio * N) smallest magnitudes over all eligible weights together
(`scope="global"`, one threshold for the whole model: layers with small weights
lose more).  Ties are broken by position, so the result is deterministic.

What it buys: the tensors keep their shape, so the artifact is as large as
before *uncompressed*, and onnxruntime's CPU kernels (dense MLAS GEMM/conv) do
not skip zeros, so latency does not fall.  What falls is the *compressed* size
(`compressed_size`, zlib level 9 of the serialized model): runs of zero bytes
deflate well, which is what a device download or a size gate sees.

Eligible weights: the constant operand of a Conv (input 1), Gemm (B) or MatMul
(input 1) with a float dtype and at least `min_size` elements, every use of
which is such a weight slot.  Refused (left dense, listed in the summary with
the reason): depthwise convolutions (few weights, each one filter's whole
support: pruning them costs accuracy for almost no size), tensors smaller than
`min_size` (the first conv, tiny heads), non-float or non-constant weights,
initializers that are also graph inputs, and initializers with other uses.
Biases and normalization parameters are never pruned.

Idempotence: a weight already at or above the target sparsity has its k
smallest entries at zero already, so a second run at the same ratio changes
nothing and reports `modified=False`; a higher ratio prunes further.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx_ir as ir

from passes.errors import PassOptionError
from passes.graph_tools import WeightSlot, constant_initializer, set_initializer, weight_slot
from passes.prune.result import PrunePassResult

logger = logging.getLogger(__name__)

Scope = Literal["global", "layer"]

RUNTIME_NOTE = (
    "unstructured sparsity shrinks the compressed artifact only: onnxruntime's CPU kernels "
    "are dense and multiply the zeros too, so latency does not improve"
)


def compressed_size(artifact: str | Path | bytes | ir.Model | onnx.ModelProto) -> int:
    """Bytes of the artifact after zlib level-9 compression (what a download sees).

    Accepts a path, the serialized bytes, or a model (serialized deterministically).
    """
    if isinstance(artifact, ir.Model):
        data = ir.serde.serialize_model(artifact).SerializeToString(deterministic=True)
    elif isinstance(artifact, onnx.ModelProto):
        data = artifact.SerializeToString(deterministic=True)
    elif isinstance(artifact, bytes | bytearray | memoryview):
        data = bytes(artifact)
    else:
        data = Path(artifact).read_bytes()
    return len(zlib.compress(data, 9))


def _eligibility(value: ir.Value, min_size: int) -> tuple[list[WeightSlot], str | None]:
    """The weight slots using `value`, and the reason it is refused (None: eligible)."""
    arr = constant_initializer(value)
    if arr is None:
        return [], "not a constant initializer"
    if not np.issubdtype(arr.dtype, np.floating):
        return [], f"dtype {arr.dtype} is not floating point"
    slots = []
    for use in value.uses():
        slot = weight_slot(use.node)
        if slot is None or use.idx != 1 or slot.value is not value:
            return [], f"also used as input {use.idx} of {use.node.op_type}"
        slots.append(slot)
    if not slots:
        return [], "unused"
    if any(s.is_depthwise for s in slots):
        return slots, "depthwise convolution"
    if arr.size < min_size:
        return slots, f"{arr.size} elements < min_size {min_size}"
    return slots, None


def _k_smallest_mask(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k smallest entries (ties broken by position)."""
    mask = np.zeros(magnitude.size, dtype=bool)
    if k > 0:
        idx = np.argsort(magnitude.reshape(-1), kind="stable")[:k]
        mask[idx] = True
    return mask.reshape(magnitude.shape)


def sparsity_summary(model: ir.Model, *, min_size: int = 0) -> dict[str, Any]:
    """Per-layer zero fraction of every Conv/Gemm/MatMul weight (pruned or not)."""
    layers: dict[str, dict[str, Any]] = {}
    total = zeros = 0
    for node in model.graph:
        slot = weight_slot(node)
        if slot is None or slot.value.name in layers:
            continue
        arr = constant_initializer(slot.value)
        if arr is None or arr.size < min_size or not np.issubdtype(arr.dtype, np.floating):
            continue
        z = int(arr.size - np.count_nonzero(arr))
        layers[_layer_name(slot, node)] = {
            "node": node.name,
            "op": node.op_type,
            "params": int(arr.size),
            "zeros": z,
            "sparsity": round(z / arr.size, 6),
        }
        total += arr.size
        zeros += z
    return {
        "layers": layers,
        "params": total,
        "zeros": zeros,
        "sparsity": round(zeros / total, 6) if total else 0.0,
    }


@dataclasses.dataclass(frozen=True)
class UnstructuredSummary:
    """What `PruneUnstructuredPass` did: per-layer sparsity of the pruned weights.

    `layers` has one `sparsity_summary` row per eligible weight; `refused` names
    the weights left dense and why; `params`, `zeros` and `sparsity` total the
    eligible weights.
    """

    ratio: float
    scope: Scope
    layers: Mapping[str, Mapping[str, Any]]
    refused: Mapping[str, str]
    note: str = RUNTIME_NOTE

    @property
    def params(self) -> int:
        return sum(int(v["params"]) for v in self.layers.values())

    @property
    def zeros(self) -> int:
        return sum(int(v["zeros"]) for v in self.layers.values())

    @property
    def sparsity(self) -> float:
        return round(self.zeros / self.params, 6) if self.params else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "scope": self.scope,
            "layers": {k: dict(v) for k, v in self.layers.items()},
            "refused": dict(self.refused),
            "params": self.params,
            "zeros": self.zeros,
            "note": self.note,
            "sparsity": self.sparsity,
        }


class PruneUnstructuredPass(ir.passes.InPlacePass):
    """Zero the smallest-magnitude weights; the result's `summary` has per-layer sparsity."""

    def __init__(self, ratio: float, *, scope: Scope = "global", min_size: int = 1024) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise PassOptionError(f"unstructured pruning ratio must be in [0, 1), got {ratio}")
        if scope not in ("global", "layer"):
            raise PassOptionError(f"scope must be 'global' or 'layer', got {scope!r}")
        self.ratio = ratio
        self.scope = scope
        self.min_size = min_size

    def call(self, model: ir.Model) -> PrunePassResult[UnstructuredSummary]:
        eligible, refused = self._eligible_weights(model)
        arrays = [_array(v) for v in eligible]
        modified = False
        for value, arr, mask in zip(eligible, arrays, self._masks(arrays), strict=True):
            if np.any(arr[mask] != 0):
                set_initializer(value, np.where(mask, np.zeros((), arr.dtype), arr))
                modified = True

        report = sparsity_summary(model)
        summary = UnstructuredSummary(
            ratio=self.ratio,
            scope=self.scope,
            layers={k: v for k, v in report["layers"].items() if k not in refused},
            refused=refused,
        )
        logger.info(
            "unstructured pruning (%s, %.0f%%): %d layers at %.1f%% sparsity, %d refused",
            self.scope,
            100 * self.ratio,
            len(summary.layers),
            100 * summary.sparsity,
            len(refused),
        )
        return PrunePassResult(model, modified, summary)

    def _eligible_weights(self, model: ir.Model) -> tuple[list[ir.Value], dict[str, str]]:
        """The weights to prune, in graph order, and the refused ones with the reason."""
        eligible: list[ir.Value] = []
        refused: dict[str, str] = {}
        seen: set[int] = set()
        for node in model.graph:
            slot = weight_slot(node)
            if slot is None or id(slot.value) in seen:
                continue
            seen.add(id(slot.value))
            _, reason = _eligibility(slot.value, self.min_size)
            if reason is None:
                eligible.append(slot.value)
            else:
                refused[_layer_name(slot, node)] = reason
        return eligible, refused

    def _masks(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Per weight, the entries to zero: k smallest per layer, or over all weights."""
        if self.scope == "layer":
            return [_k_smallest_mask(np.abs(a), math.floor(self.ratio * a.size)) for a in arrays]
        if not arrays:
            return []
        flat = np.concatenate([np.abs(a).reshape(-1) for a in arrays])
        mask = _k_smallest_mask(flat, math.floor(self.ratio * flat.size)).reshape(-1)
        masks, offset = [], 0
        for arr in arrays:
            masks.append(mask[offset : offset + arr.size].reshape(arr.shape))
            offset += arr.size
        return masks


def _array(value: ir.Value) -> np.ndarray:
    arr = constant_initializer(value)
    assert arr is not None  # eligible weights are constant initializers
    return arr


def _layer_name(slot: WeightSlot, node: ir.Node) -> str:
    """A weight's key in the summary: its name, else its node's."""
    return slot.value.name or node.name or "<unnamed>"
