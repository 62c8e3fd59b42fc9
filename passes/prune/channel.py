"""Structured output-channel pruning of Conv/Gemm/MatMul on the ONNX graph.

Rewrite: for each group of channels that must stay aligned (see
`channel_groups`: a layer alone, or all layers feeding one residual Add, with the
depthwise convs, BatchNorms, activations, Concats and Flatten→Gemm they reach),
drop the least important channels:

    Conv  W[M, C, kh, kw], b[M]  →  W[keep, :, ...], b[keep]     (the source)
    BN    scale/B/mean/var[M]    →  [keep]
    DWConv W[M, 1, kh, kw]       →  W[keep], group = |keep|
    Conv' W'[N, M, ...]          →  W'[:, keep, ...]            (every consumer)
    Gemm' after Flatten          →  B'[..., c*H*W + j for c in keep, j < H*W]
    Concat                       →  consumer positions offset by the widths before

The function is preserved exactly when the dropped channels are zero after the
activation (a masked model, see `finetune.py`); otherwise their contribution is
removed, which is the approximation pruning makes.

Importance of channel c of a group: for each source s, a score vector over its
output channels (`"l1"`: sum |W_s[c]|, `"l2"`: ||W_s[c]||_2, or arrays passed in
by the caller, keyed by the source node's name or its weight's name — e.g.
first-order Taylor scores from `finetune.taylor_importance`, which are keyed by
torch module and mapped to node names with `finetune.onnx_node_modules`), normalised to sum
1 per source and summed over the group's sources (a joint importance, so a
residual group is ranked by all its layers).

Ratio semantics (the answer to "what does pruning twice do"): `ratio` is the
fraction of a group's *original* channels to remove.  The first pass records the
original count on each source node (`metadata_props["edgec.prune.original_channels"]`),
so running the pass again at the same ratio is a no-op (`modified=False`), and a
higher ratio prunes further toward the new target.  Keep = max(min_channels,
C0 - floor(ratio * C0)), then rounded *up* to a multiple of `round_to` (so a
group never loses more than `ratio`; groups smaller than `round_to` are not
rounded), never above the current count.

Refusals are per group and logged: see `channel_groups` for the list (graph
outputs, Reshape/unknown consumers, shared weights, grouped convs, ...); a group
without importance scores (when a mapping is given) is also left whole.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from passes.errors import PassOptionError
from passes.graph_tools import constant_initializer, set_initializer
from passes.prune.channel_groups import ChannelAnalysis, Source
from passes.prune.result import PrunePassResult

logger = logging.getLogger(__name__)

ORIGINAL_CHANNELS_KEY = "edgec.prune.original_channels"

Importance = Literal["l1", "l2"] | Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """One group's decision: `keep` is None when nothing is removed."""

    sources: tuple[str, ...]  # source node names
    channels: int  # channels now
    original_channels: int
    keep: tuple[int, ...] | None
    status: Literal["pruned", "unchanged", "refused"]
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "channels_before": self.channels,
            "channels_after": self.channels if self.keep is None else len(self.keep),
            "original_channels": self.original_channels,
            "status": self.status,
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class ChannelSummary:
    """What channel pruning decided, group by group (see `ChannelGroup`)."""

    groups: tuple[ChannelGroup, ...]

    @property
    def groups_pruned(self) -> int:
        return sum(g.status == "pruned" for g in self.groups)

    @property
    def groups_refused(self) -> int:
        return sum(g.status == "refused" for g in self.groups)

    @property
    def channels_before(self) -> int:
        return sum(g.channels for g in self.groups)

    @property
    def channels_after(self) -> int:
        return sum(g.channels if g.keep is None else len(g.keep) for g in self.groups)

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": [g.as_dict() for g in self.groups],
            "groups_pruned": self.groups_pruned,
            "groups_refused": self.groups_refused,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
        }


def node_name(node: ir.Node) -> str:
    """A node's name as the plan keys it (`"<unnamed>"` when it has none)."""
    return node.name or "<unnamed>"


@dataclasses.dataclass
class ChannelPlan:
    """The analysis plus a keep decision per group; `apply()` edits the model."""

    analysis: ChannelAnalysis
    groups: list[ChannelGroup]
    _kept: dict[int, np.ndarray]  # root group id → kept channel indices

    def dropped(self) -> dict[str, np.ndarray]:
        """Dropped output channels per source node name (pruned groups only)."""
        out: dict[str, np.ndarray] = {}
        for root, keep in self._kept.items():
            for src in self.analysis.sources(root):
                mask = np.ones(src.channels, dtype=bool)
                mask[keep] = False
                out[node_name(src.node)] = np.flatnonzero(mask)
        return out

    def dropped_inputs(self) -> dict[str, np.ndarray]:
        """Dropped input positions (along the weight's input axis) per consumer node name.

        With Flatten→Gemm a channel covers H*W positions; all of them are listed.
        """
        out: dict[str, np.ndarray] = {}
        a = self.analysis
        for node, layout in a.consumers:
            width = sum(s.size * s.inner for s in layout)
            mask = np.ones(width, dtype=bool)
            mask[a.positions(layout, self._kept)] = False
            if mask.any():
                out[node_name(node)] = np.flatnonzero(mask)
        return out

    def keep_scores(self) -> dict[str, np.ndarray]:
        """Importance arrays (1 kept, 0 dropped) per source node name.

        Passed as `importance=` to `PruneChannelsPass` on a re-export of the same
        architecture, they reproduce exactly this plan's choice of channels.
        """
        out: dict[str, np.ndarray] = {}
        for name, dropped in self.dropped().items():
            src = next(
                s for r in self._kept for s in self.analysis.sources(r) if node_name(s.node) == name
            )
            scores = np.ones(src.channels, dtype=np.float64)
            scores[dropped] = 0.0
            out[name] = scores
        return out

    def kept(self) -> dict[str, np.ndarray]:
        """Kept output channels per source node name (pruned groups only)."""
        return {
            node_name(src.node): keep
            for root, keep in self._kept.items()
            for src in self.analysis.sources(root)
        }

    def apply(self) -> bool:
        """Edit the model in place; True when anything changed."""
        if not self._kept:
            return False
        a = self.analysis
        for root, keep in self._kept.items():
            original = str(_original_channels(a.sources(root)))
            for src in a.sources(root):
                _slice(src.weight, src.out_axis, keep)
                if src.bias is not None and src.bias_axis is not None:
                    _slice(src.bias, src.bias_axis, keep)
                src.node.metadata_props.setdefault(ORIGINAL_CHANNELS_KEY, original)
        for edit in a.edits:
            positions = a.positions(edit.layout, self._kept)
            if not _is_identity(positions, edit.layout):
                edit.apply(positions)
        for value, layout in a.layouts.items():
            if value.shape is not None and len(value.shape) >= 2:
                dims = list(value.shape.dims)
                dims[1] = len(a.positions(layout, self._kept))
                value.shape = ir.Shape(dims)
        return True

    def summary(self) -> ChannelSummary:
        return ChannelSummary(tuple(self.groups))


def _is_identity(positions: np.ndarray, layout: tuple) -> bool:
    width = sum(s.size * s.inner for s in layout)
    return len(positions) == width


def _slice(value: ir.Value, axis: int, keep: np.ndarray) -> None:
    arr = constant_initializer(value)
    assert arr is not None
    set_initializer(value, np.take(arr, keep, axis=axis))


def _original_channels(sources: list[Source]) -> int:
    counts = [s.channels for s in sources]
    for s in sources:
        recorded = s.node.metadata_props.get(ORIGINAL_CHANNELS_KEY)
        if recorded is not None and recorded.isdigit():
            counts.append(int(recorded))
    return max(counts)


def magnitude_scores(source: Source, norm: Literal["l1", "l2"]) -> np.ndarray:
    """Per-output-channel weight magnitude of one source layer."""
    w = np.moveaxis(source.weight_array().astype(np.float64), source.out_axis, 0)
    w = w.reshape(w.shape[0], -1)
    return np.abs(w).sum(axis=1) if norm == "l1" else np.sqrt((w * w).sum(axis=1))


def _scores(source: Source, importance: Importance) -> np.ndarray | None:
    if isinstance(importance, str):
        return magnitude_scores(source, importance)
    for key in (source.node.name, source.weight.name):
        if key and key in importance:
            s = np.asarray(importance[key], dtype=np.float64).reshape(-1)
            if s.shape[0] != source.channels:
                raise PassOptionError(
                    f"importance for {key!r} has {s.shape[0]} entries but the layer has "
                    f"{source.channels} output channels; recompute the scores on this model"
                )
            return s
    return None


def target_keep(original: int, ratio: float, *, round_to: int = 1, min_channels: int = 1) -> int:
    """Channels kept out of `original` for a ratio (see the module docstring)."""
    keep = original - math.floor(ratio * original + 1e-9)
    keep = max(keep, min(min_channels, original), 1)
    if round_to > 1 and original >= round_to:
        keep = round_to * math.ceil(keep / round_to)
    return min(keep, original)


def plan_channel_pruning(
    model: ir.Model,
    ratio: float,
    *,
    importance: Importance = "l1",
    round_to: int = 1,
    min_channels: int = 1,
) -> ChannelPlan:
    """Analyse `model` and decide which channels each group keeps (the model is not edited)."""
    if not 0.0 <= ratio < 1.0:
        raise PassOptionError(f"channel pruning ratio must be in [0, 1), got {ratio}")
    if isinstance(importance, str) and importance not in ("l1", "l2"):
        raise PassOptionError(
            f"importance must be 'l1', 'l2' or a mapping of scores, got {importance!r}"
        )
    analysis = ChannelAnalysis(model)
    groups: list[ChannelGroup] = []
    kept: dict[int, np.ndarray] = {}
    for root in analysis.groups():
        sources = analysis.sources(root)
        names = tuple(node_name(s.node) for s in sources)
        size = analysis.size(root)
        original = _original_channels(sources)
        reasons = analysis.refusals(root)
        if reasons:
            logger.info("channel group %s kept whole: %s", ", ".join(names), "; ".join(reasons))
            groups.append(ChannelGroup(names, size, original, None, "refused", "; ".join(reasons)))
            continue
        n_keep = target_keep(original, ratio, round_to=round_to, min_channels=min_channels)
        if n_keep >= size:
            groups.append(ChannelGroup(names, size, original, None, "unchanged"))
            continue
        per_source = [_scores(s, importance) for s in sources]
        present = [s for s in per_source if s is not None]
        if not present:
            reason = "no importance scores were given for its layers"
            logger.info("channel group %s kept whole: %s", ", ".join(names), reason)
            groups.append(ChannelGroup(names, size, original, None, "refused", reason))
            continue
        joint = sum(s / s.sum() if s.sum() > 0 else s for s in present)
        order = np.argsort(-np.asarray(joint), kind="stable")
        keep = np.sort(order[:n_keep]).astype(np.int64)
        kept[root] = keep
        groups.append(ChannelGroup(names, size, original, tuple(int(i) for i in keep), "pruned"))
    return ChannelPlan(analysis, groups, kept)


class PruneChannelsPass(ir.passes.InPlacePass):
    """Remove the least important output channels of every prunable group.

    The result's `summary` holds the per-group decisions (a `ChannelSummary`).
    """

    def __init__(
        self,
        ratio: float,
        *,
        importance: Importance = "l1",
        round_to: int = 1,
        min_channels: int = 1,
    ) -> None:
        super().__init__()
        self.ratio = ratio
        self.importance = importance
        self.round_to = round_to
        self.min_channels = min_channels

    def call(self, model: ir.Model) -> PrunePassResult[ChannelSummary]:
        plan = plan_channel_pruning(
            model,
            self.ratio,
            importance=self.importance,
            round_to=self.round_to,
            min_channels=self.min_channels,
        )
        modified = plan.apply()
        summary = plan.summary()
        logger.info(
            "channel pruning: %d groups pruned, %d refused, channels %d → %d",
            summary.groups_pruned,
            summary.groups_refused,
            summary.channels_before,
            summary.channels_after,
        )
        return PrunePassResult(model, modified, summary)
