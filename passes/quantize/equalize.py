"""Cross-layer equalization (after Nagel et al. 2019, "Data-Free Quantization"), driven
by activation ranges, for Conv → Relu/Clip(0, ·) → Conv chains such as MobileNetV2's
expand → depthwise → project blocks.

Rewrite, for a pair P → act → C where the activation output a has channels c:

    W_P[c] /= s_c,  b_P[c] /= s_c,  W_C[:, c] *= s_c   (input channel c of C)

Relu commutes with a positive per-channel scale, so the function is unchanged.
Clip(0, 6) (ReLU6) does not: clip(z/s, 0, 6) != clip(z, 0, 6)/s. We therefore
choose the scales from data and move the Clip's upper bound with them: with
m_c the largest value of channel c after the activation (over the statistics
batches) and T = max_c m_c, channel c is scaled so that its maximum becomes

    m_c / s_c = T * (m_c / T)^(1 - alpha)      (alpha = 1: every channel reaches T)

and the Clip's upper bound becomes T. For a channel that the Clip saturates
(m_c = 6) the new bound is exactly its scaled bound; for one that never
reaches 6, clip(z/s, 0, T) equals clip(z, 0, 6)/s for every z up to
T * s_c >= m_c — so the FP32 function is preserved on the statistics data,
and elsewhere differs only above each channel's observed range. With
`headroom` h, a channel is scaled up only until its maximum reaches T / h, so
the preserved interval extends to h * m_c. (Tests check the preservation with
onnxruntime on the statistics batches.)

Why activation ranges and not Nagel's weight ranges: with per-channel weight
quantization, scaling an output row of W_P and the matching depthwise channel
of W_C leaves both weights' relative quantization error unchanged, so the
weight-range criterion buys nothing there; what limits accuracy is the one
per-tensor activation scale shared by channels whose ranges differ by 100x.
Equalizing the channels' ranges gives each the full 8 bits. When C is not
depthwise, scaling its input column c also moves weight range between columns
of its per-output-channel quantizer; `alpha_dense` balances the two, like
SmoothQuant's migration strength. `equalize()` (what `quantize` calls) uses
alpha = 1 for depthwise consumers, alpha_dense = 0.5 (with GPTQ rounding and the
range search the weights absorb half the migration well: validation SQNR on
MobileNetV2 21.1 → 21.7 dB; 0.75 was no better, and before GPTQ both 0.5 and
1 were worse than 0) and headroom 2 (each scaled
channel may still grow 2x above its observed maximum before the Clip cuts it;
without headroom, held-out photos exceeding the calibration maxima cost
25 dB of FP32 fidelity, with 2x the FP32 model stays within 48 dB).

Marks each equalized activation node (metadata ``edgec.equalized``) and skips
marked ones, so running the pass again changes nothing.

Refuses (pair left alone): P or C weights or P's bias not constant or shared;
P's output or the activation output used elsewhere or a graph output; a Clip
whose lower bound is not 0 or whose bounds are not constant; Conv groups that
do not line up; channels that never activate (m_c = 0) keep s_c = 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from passes import graph_tools
from passes.quantize.calibrate import run_with_outputs

logger = logging.getLogger(__name__)

# Set on an activation node whose channels were equalized: the statistics that chose
# the scales described the model before, so a second run must not scale again.
MARK = "edgec.equalized"


@dataclass
class EqualizePair:
    producer: ir.Node
    activation: ir.Node
    consumer: ir.Node

    @property
    def depthwise_consumer(self) -> bool:
        w = graph_tools.constant(self.consumer.inputs[1])
        group = graph_tools.attr_int(self.consumer, "group", 1)
        return w is not None and group > 1 and w.shape[1] == 1


def find_pairs(
    model: ir.Model, exclude: frozenset[str] | set[str] = frozenset()
) -> list[EqualizePair]:
    """Every Conv → Relu/Clip(0, ·) → Conv chain that can be equalized (module docstring)."""
    pairs = []
    for act in model.graph:
        if not graph_tools.is_std(act, "Relu", "Clip") or not act.inputs or act.inputs[0] is None:
            continue
        bounds = graph_tools.activation_bounds(act)
        if bounds is None or bounds[0] != 0.0:
            continue
        producer = act.inputs[0].producer()
        if producer is None or not graph_tools.is_std(producer, "Conv") or producer.name in exclude:
            continue
        z, a = producer.outputs[0], act.outputs[0]
        if z.is_graph_output() or len(z.uses()) != 1 or a.is_graph_output() or len(a.uses()) != 1:
            continue
        use = next(iter(a.uses()))
        consumer = use.node
        if not graph_tools.is_std(consumer, "Conv") or use.idx != 0 or consumer.name in exclude:
            continue
        if not (_ok_weight(producer) and _ok_weight(consumer) and _ok_bias(producer)):
            continue
        w_p = graph_tools.constant(producer.inputs[1])
        w_c = graph_tools.constant(consumer.inputs[1])
        assert w_p is not None and w_c is not None
        group = graph_tools.attr_int(consumer, "group", 1)
        channels = w_p.shape[0]
        if channels % group or w_c.shape[1] * group != channels or w_c.shape[0] % group:
            continue
        pairs.append(EqualizePair(producer, act, consumer))
    return pairs


def _ok_weight(node: ir.Node) -> bool:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    return (
        w is not None
        and graph_tools.constant(w) is not None
        and len(w.uses()) == 1
        and graph_tools.is_float(w)
    )


def _ok_bias(node: ir.Node) -> bool:
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return True
    b = node.inputs[2]
    return graph_tools.constant(b) is not None and len(b.uses()) == 1


def _fold_channel_max(acc: dict[str, np.ndarray], name: str, a: np.ndarray) -> None:
    """acc[name] becomes the running per-channel (axis 1) maximum of the arrays seen."""
    m = a.max(axis=tuple(i for i in range(a.ndim) if i != 1))
    acc[name] = m if name not in acc else np.maximum(acc[name], m)


def channel_maxima(
    model: ir.Model,
    pairs: list[EqualizePair],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
) -> dict[str, np.ndarray]:
    """Per-channel maximum of each pair's activation output (axis 1), one pass."""
    names = [p.activation.outputs[0].name or "" for p in pairs]
    maxima: dict[str, np.ndarray] = {}

    run_with_outputs(
        model, names, batches, lambda n, a: _fold_channel_max(maxima, n, a), threads=threads
    )
    return maxima


class EqualizeCrossLayerPass(ir.passes.InPlacePass):
    """Scale channels between Conv → Relu/Clip → Conv so their activation ranges match."""

    def __init__(
        self,
        maxima: Mapping[str, np.ndarray],
        *,
        alpha: float = 1.0,
        alpha_dense: float = 0.5,
        exclude: frozenset[str] | set[str] = frozenset(),
        max_scale: float = 256.0,
        headroom: float = 1.0,
    ) -> None:
        super().__init__()
        self.maxima = dict(maxima)
        self.alpha = alpha
        self.alpha_dense = alpha_dense
        self.exclude = frozenset(exclude)
        self.max_scale = max_scale
        self.headroom = headroom

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for pair in find_pairs(model, self.exclude):
            name = pair.activation.outputs[0].name or ""
            if name not in self.maxima or pair.activation.metadata_props.get(MARK):
                continue
            if self._equalize(model, pair, np.asarray(self.maxima[name], dtype=np.float64)):
                pair.activation.metadata_props[MARK] = "1"
                changed += 1
        if changed:
            logger.info("equalized %d Conv → activation → Conv pairs", changed)
        return ir.passes.PassResult(model, modified=bool(changed))

    def scales(self, pair: EqualizePair, m: np.ndarray) -> tuple[np.ndarray, float]:
        """(s_c, T) for a pair whose activation channels peak at m."""
        bounds = graph_tools.activation_bounds(pair.activation)
        assert bounds is not None
        top = float(m.max()) if m.size else 0.0
        if top <= 0:
            return np.ones_like(m), bounds[1]
        alpha = self.alpha if pair.depthwise_consumer else self.alpha_dense
        live = m > top * 1e-6
        ratio = np.where(live, np.minimum(m * self.headroom / top, 1.0), 1.0)
        s = ratio**alpha
        s = np.clip(s, 1.0 / self.max_scale, self.max_scale)
        s = np.where(live, s, 1.0)
        return s, top

    def _equalize(self, model: ir.Model, pair: EqualizePair, m: np.ndarray) -> bool:
        s, top = self.scales(pair, m)
        w_p = graph_tools.constant(pair.producer.inputs[1])
        w_c = graph_tools.constant(pair.consumer.inputs[1])
        assert w_p is not None and w_c is not None
        if m.shape != (w_p.shape[0],):
            return False
        if np.allclose(s, 1.0, rtol=1e-6, atol=0.0):
            return False
        dtype = w_p.dtype
        shape_p = (-1,) + (1,) * (w_p.ndim - 1)
        new_wp = (w_p.astype(np.float64) / s.reshape(shape_p)).astype(dtype)
        b = (
            graph_tools.constant(pair.producer.inputs[2])
            if len(pair.producer.inputs) > 2 and pair.producer.inputs[2] is not None
            else None
        )
        group = graph_tools.attr_int(pair.consumer, "group", 1)
        cpg = w_c.shape[1]  # input channels per group
        out_pg = w_c.shape[0] // group
        new_wc = w_c.astype(np.float64).copy()
        for g in range(group):
            cols = s[g * cpg : (g + 1) * cpg]
            shape_c = (1, -1) + (1,) * (w_c.ndim - 2)
            new_wc[g * out_pg : (g + 1) * out_pg] *= cols.reshape(shape_c)
        graph = model.graph
        _set_const(graph, pair.producer, 1, new_wp)
        if b is not None:
            _set_const(graph, pair.producer, 2, (b.astype(np.float64) / s).astype(b.dtype))
        _set_const(graph, pair.consumer, 1, new_wc.astype(w_c.dtype))
        if graph_tools.is_std(pair.activation, "Clip"):
            _set_clip_max(graph, pair.activation, float(np.max(m / s)))
        return True


def _set_const(graph: ir.Graph, node: ir.Node, idx: int, array: np.ndarray) -> None:
    value = node.inputs[idx]
    assert value is not None
    if value.is_initializer() and value.const_value is not None:
        value.const_value = ir.tensor(array, name=value.name)
        return
    node.replace_input_with(
        idx, graph_tools.new_initializer(graph, f"{node.name}_in{idx}_eq", array)
    )


def _set_clip_max(graph: ir.Graph, clip: ir.Node, top: float) -> None:
    if "max" in clip.attributes:  # opset < 11
        clip.attributes["max"] = ir.AttrFloat32("max", top)
        return
    old = clip.inputs[2] if len(clip.inputs) > 2 else None
    dtype = old.dtype.numpy() if old is not None and old.dtype is not None else np.float32
    arr = np.asarray(top, dtype=dtype)
    new = graph_tools.new_initializer(graph, f"{clip.name or 'clip'}_max_eq", arr)
    if len(clip.inputs) < 3:
        clip.resize_inputs(3)
    clip.replace_input_with(2, new)
    if old is not None and not old.uses():
        producer = old.producer()
        if producer is not None and graph_tools.is_std(producer, "Constant"):
            graph.remove(producer, safe=True)
        elif old.name and old.name in graph.initializers and not old.is_graph_input():
            graph.initializers.pop(old.name)


# -- linear streams: residual connections and Conv → Conv without activation --------------


@dataclass
class LinearStream:
    """Tensors joined by Add nodes (a residual stream) or a lone Conv output read only by
    Convs: scaling channel c of all of them by 1/s_c is exact when every producer's
    output row c and every consumer's input column c absorb the scale."""

    values: list[ir.Value]
    producers: list[ir.Node]  # Conv nodes writing into the stream
    consumers: list[ir.Node]  # Conv nodes reading the stream (input 0)
    channels: int


def find_streams(
    model: ir.Model, exclude: frozenset[str] | set[str] = frozenset()
) -> list[LinearStream]:
    """Every linear stream whose producers and consumers are all scalable Convs."""
    graph = model.graph

    def joined() -> Iterator[tuple[ir.Value, ...]]:
        for node in graph:
            if (
                graph_tools.is_std(node, "Add")
                and len(node.inputs) == 2
                and all(v is not None for v in node.inputs)
            ):
                a, b = node.inputs
                assert a is not None and b is not None
                if graph_tools.constant(a) is None and graph_tools.constant(b) is None:
                    yield a, b, node.outputs[0]
            elif graph_tools.is_std(node, "Conv") and node.outputs:
                yield (node.outputs[0],)

    streams = []
    for values in graph_tools.components(joined()):
        stream = _check_stream(values, exclude)
        if stream is not None:
            streams.append(stream)
    order = {id(n): i for i, n in enumerate(graph)}
    streams.sort(key=lambda s: min(order.get(id(p), 0) for p in s.producers))
    return streams


def _check_stream(
    values: list[ir.Value], exclude: frozenset[str] | set[str]
) -> LinearStream | None:
    members = {id(v) for v in values}
    producers: list[ir.Node] = []
    consumers: list[ir.Node] = []
    channels: int | None = None
    for v in values:
        if v.is_graph_output() or v.is_graph_input():
            return None
        p = v.producer()
        if p is None or p.name in exclude:
            return None
        if graph_tools.is_std(p, "Conv"):
            if not (_ok_weight(p) and _ok_bias(p)):
                return None
            w = graph_tools.constant(p.inputs[1])
            assert w is not None
            if channels is not None and w.shape[0] != channels:
                return None
            channels = w.shape[0]
            producers.append(p)
        elif not (
            graph_tools.is_std(p, "Add")
            and all(i is not None and id(i) in members for i in p.inputs)
        ):
            return None
        for use in v.uses():
            u = use.node
            if graph_tools.is_std(u, "Add") and id(u.outputs[0]) in members:
                continue
            if (
                not graph_tools.is_std(u, "Conv")
                or use.idx != 0
                or u.name in exclude
                or not _ok_weight(u)
            ):
                return None
            if u not in consumers:
                consumers.append(u)
    if not producers or not consumers or channels is None:
        return None
    for c in consumers:
        w = graph_tools.constant(c.inputs[1])
        assert w is not None
        group = graph_tools.attr_int(c, "group", 1)
        if w.shape[1] * group != channels or w.shape[0] % group:
            return None
    return LinearStream(values, producers, consumers, channels)


def stream_ranges(
    model: ir.Model,
    streams: list[LinearStream],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int = 0,
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every stream tensor, one pass."""
    names = [v.name or "" for s in streams for v in s.values]
    out: dict[str, np.ndarray] = {}

    run_with_outputs(
        model, names, batches, lambda n, a: _fold_channel_max(out, n, np.abs(a)), threads=threads
    )
    return out


class EqualizeStreamPass(ir.passes.InPlacePass):
    """Scale the channels of linear streams so that their ranges move toward each other.

    For a stream with per-channel range r_c (max |x| over all its tensors):

        s_c = (r_c / max_c r_c)^alpha;   producer rows, biases /= s_c;   consumer columns *= s_c

    Exact (no activation in between; Add is linear). alpha = 0 does nothing, alpha = 1
    gives every channel the same range; in between it balances activation range
    against the consumer's per-output-channel weight range (SmoothQuant's migration
    strength). Equalized streams are marked on their producers (``edgec.equalized``).
    """

    def __init__(
        self,
        ranges: Mapping[str, np.ndarray],
        *,
        alpha: float = 0.5,
        exclude: frozenset[str] | set[str] = frozenset(),
        max_scale: float = 256.0,
    ) -> None:
        super().__init__()
        self.ranges = dict(ranges)
        self.alpha = alpha
        self.exclude = frozenset(exclude)
        self.max_scale = max_scale

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for stream in find_streams(model, self.exclude):
            if any(p.metadata_props.get(MARK) for p in stream.producers):
                continue
            rs = [self.ranges.get(v.name or "") for v in stream.values]
            known = [r for r in rs if r is not None and r.shape == (stream.channels,)]
            if len(known) != len(rs):
                continue
            r = np.max(np.stack(known), axis=0).astype(np.float64)
            top = float(r.max())
            if top <= 0:
                continue
            live = r > top * 1e-6
            s = np.where(
                live,
                np.clip((np.where(live, r, top) / top) ** self.alpha, 1 / self.max_scale, 1.0),
                1.0,
            )
            if np.allclose(s, 1.0, rtol=1e-6, atol=0.0):
                continue
            graph = model.graph
            for p in stream.producers:
                w = graph_tools.constant(p.inputs[1])
                assert w is not None
                _set_const(
                    graph,
                    p,
                    1,
                    (w.astype(np.float64) / s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype),
                )
                if len(p.inputs) > 2 and p.inputs[2] is not None:
                    b = graph_tools.constant(p.inputs[2])
                    assert b is not None
                    _set_const(graph, p, 2, (b.astype(np.float64) / s).astype(b.dtype))
                p.metadata_props[MARK] = "1"
            for c in stream.consumers:
                w = graph_tools.constant(c.inputs[1])
                assert w is not None
                _set_const(graph, c, 1, _scale_columns(w, s, graph_tools.attr_int(c, "group", 1)))
            changed += 1
        if changed:
            logger.info("equalized %d linear streams", changed)
        return ir.passes.PassResult(model, modified=bool(changed))


def _scale_columns(w: np.ndarray, s: np.ndarray, group: int) -> np.ndarray:
    """W[:, c] *= s_c for input channel c of a grouped Conv weight (M, C/group, k...)."""
    cpg = w.shape[1]
    out_pg = w.shape[0] // group
    new = w.astype(np.float64).copy()
    shape = (1, -1) + (1,) * (w.ndim - 2)
    for g in range(group):
        new[g * out_pg : (g + 1) * out_pg] *= s[g * cpg : (g + 1) * cpg].reshape(shape)
    return new.astype(w.dtype)


def equalize(
    model: ir.Model,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    headroom: float = 2.0,
    alpha: float = 1.0,
    alpha_dense: float = 0.5,
    stream_alpha: float = 0.5,
    pairs: bool = True,
    exclude: frozenset[str] | set[str] = frozenset(),
    threads: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[int, int]:
    """Both equalizations with statistics from one pass; returns (pairs, streams) equalized.
    `progress(samples done, total)` follows the statistics pass.

    The two are independent: stream equalization is exact, so the activation
    statistics of the pairs (Clip outputs) are the same before and after it, and
    pair equalization does not touch stream tensors.
    """
    found = find_pairs(model, exclude) if pairs else []
    streams = find_streams(model, exclude) if stream_alpha > 0 else []
    pair_names = [p.activation.outputs[0].name or "" for p in found]
    stream_names = [v.name or "" for s in streams for v in s.values]
    if not pair_names and not stream_names:
        return 0, 0
    maxima: dict[str, np.ndarray] = {}
    absmax: dict[str, np.ndarray] = {}
    pair_set = set(pair_names)

    def visit(name: str, a: np.ndarray) -> None:
        if name in pair_set:
            _fold_channel_max(maxima, name, a)
        else:
            _fold_channel_max(absmax, name, np.abs(a))

    run_with_outputs(
        model,
        list(dict.fromkeys(pair_names + stream_names)),
        batches,
        visit,
        threads=threads,
        progress=progress,
    )
    n_streams = 0
    if streams:
        before = {id(p) for s in streams for p in s.producers if p.metadata_props.get(MARK)}
        EqualizeStreamPass(absmax, alpha=stream_alpha, exclude=exclude)(model)
        n_streams = sum(
            1
            for s in streams
            if any(p.metadata_props.get(MARK) and id(p) not in before for p in s.producers)
        )
    n_pairs = 0
    if found:
        EqualizeCrossLayerPass(
            maxima, alpha=alpha, alpha_dense=alpha_dense, headroom=headroom, exclude=exclude
        )(model)
        n_pairs = sum(1 for p in found if p.activation.metadata_props.get(MARK))
    return n_pairs, n_streams
