"""Accuracy of a candidate's outputs against the FP32 reference's, on the same inputs.

Definitions (N samples; the first axis is the sample axis):

- top1_agreement: fraction of samples where argmax(candidate) == argmax(reference).
- top5_agreement: fraction of samples where the reference's top-1 class is among
  the candidate's top-k classes, k = min(5, C).
- Both are None unless the outputs are class scores: one axis besides the sample
  axis holds C >= 2 values and every other axis has size 1 ((N, C), and the
  (N, C, 1, 1) of a convolutional classifier head), and the caller does not say
  they are something else (`class_scores=False`: an embedding's argmax means
  nothing, so neither agreement is computed).
- cosine: mean over samples of the cosine similarity of the flattened outputs;
  a pair of all-zero outputs counts as 1.0, one all-zero output against a
  non-zero one as 0.0.
- min_cosine: the worst sample's cosine similarity (same conventions): a mean
  near 1 can hide one sentence or image the candidate gets badly wrong.
- sqnr_db: 10·log10(Σ ref² / Σ (ref − cand)²) over every element, clamped to
  [-200, 200] dB (identical outputs give 200.0, never inf).
- max_abs_error: max |ref − cand| over every element.
- top1_headroom_db / top1_flips_cleared_db (class scores only): how firm the top-1
  agreement is, with the noise's shape kept. Scaling the noise e = cand − ref by k
  keeps a sample's reference top-1 class t exactly while k is below
  min over classes j with e_j > e_t of (ref_t − ref_j) / (e_j − e_t).
  top1_headroom_db = 20·log10 of the smallest such k over the agreeing samples: the
  SQNR could fall that many dB before one more sample flips (None: none agrees, or
  no scaling of this noise flips one). top1_flips_cleared_db = −20·log10 of the
  smallest k over the samples that disagree: that many dB more SQNR and every one of
  them agrees again (None: none disagrees). A gate on agreement whose headroom is a
  fraction of a dB rests on a near-tie. top1_flip_db lists, ascending, the SQNR drops
  at which the next agreeing samples flip (at most FLIP_DB_KEPT of them;
  top1_headroom_db is its first), and top1_clear_db, ascending, the SQNR rises at
  which the samples that disagree agree again (the last one kept is
  top1_flips_cleared_db when all are kept): a `--min-accuracy` gate on agreement reads
  its margin from them (`compiler/gates.py`).
- top1_accuracy_events_db (labels only): the same for label accuracy, which can also
  rise with noise (noise can move a sample FP32 gets wrong onto its label): where the
  count of correct samples changes, as (dB, +1 or -1) pairs, "lower" for SQNR drops
  and "higher" for rises, the FLIP_DB_KEPT nearest each way.
- top1_accuracy / baseline_top1_accuracy: argmax of the candidate / reference
  equal to the labels; None without labels.

Values that are not finite (the candidate produced NaN or inf) stay NaN/inf in
the dataclass and become None in `to_dict`, which is JSON-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ground.errors import InvalidInput

if TYPE_CHECKING:
    from targets.base import Runner

SQNR_CAP_DB = 200.0
_TOPK = 5
#: how many of the next flips' SQNR drops `top1_flip_db` keeps: a gate has that many
#: flips to spare at most before its margin is only "more than the last"
FLIP_DB_KEPT = 32


@dataclass(frozen=True)
class Accuracy:
    """The report's `accuracy` object (see the module docstring for each metric)."""

    samples: int
    top1_agreement: float | None
    top5_agreement: float | None
    cosine: float
    min_cosine: float
    sqnr_db: float
    max_abs_error: float
    top1_accuracy: float | None
    baseline_top1_accuracy: float | None
    top1_headroom_db: float | None = None
    top1_flips_cleared_db: float | None = None
    top1_flip_db: tuple[float, ...] | None = None
    top1_clear_db: tuple[float, ...] | None = None
    top1_accuracy_events_db: Mapping[str, tuple[tuple[float, int], ...]] | None = None
    #: the output these metrics are of (None: a single compared output)
    output: str | None = None
    #: every output's metrics by name (`compare_all`), the judged one included
    outputs: Mapping[str, Mapping[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float):
                value = _round_sig(value, 6) if math.isfinite(value) else None
            out[key] = value
        return out


def _round_sig(x: float, digits: int) -> float:
    if x == 0:
        return 0.0
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def compare_outputs(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    class_scores: bool = True,
) -> Accuracy:
    """Metrics of `candidate` against `reference` (same shape, first axis = samples)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise InvalidInput(
            f"candidate output shape {cand.shape} differs from the reference's {ref.shape}"
        )
    if ref.ndim == 0:
        ref, cand = ref.reshape(1), cand.reshape(1)
    n = ref.shape[0]
    if n == 0 or ref.size == 0:
        raise InvalidInput("no outputs to compare: the evaluation data is empty")

    with np.errstate(all="ignore"):
        diff = ref - cand
        max_abs = float(np.max(np.abs(diff)))  # NaN if any difference is NaN
        signal = float(np.sum(ref * ref))
        noise = float(np.sum(diff * diff))
        cosines = _cosines(ref.reshape(n, -1), cand.reshape(n, -1))
    sqnr = _sqnr_db(signal, noise)

    classes = _class_axis_size(ref.shape) if class_scores else None
    classification = classes is not None
    top1 = top5 = acc = base_acc = headroom = cleared = flip_db = clear_db = events = None
    if classes is not None:
        ref, cand = ref.reshape(n, classes), cand.reshape(n, classes)
        ref_top1 = np.argmax(ref, axis=1)
        cand_top1 = np.argmax(cand, axis=1)
        k = min(_TOPK, ref.shape[1])
        cand_topk = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        top1 = float(np.mean(ref_top1 == cand_top1))
        top5 = float(np.mean(np.any(cand_topk == ref_top1[:, None], axis=1)))
        headroom, cleared, flip_db, clear_db = _top1_margins(ref, cand, ref_top1 == cand_top1)
    if labels is not None:
        lab = np.asarray(labels)
        if not classification:
            raise InvalidInput(
                f"labels were given but the output has shape {ref.shape}, not (samples, classes)"
            )
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            raise InvalidInput(
                f"labels must be {n} integer class indices, got shape {lab.shape} ({lab.dtype})"
            )
        acc = float(np.mean(cand_top1 == lab))
        base_acc = float(np.mean(ref_top1 == lab))
        events = _label_events(ref, cand, lab)
    return Accuracy(
        samples=int(n),
        top1_agreement=top1,
        top5_agreement=top5,
        cosine=float(np.mean(cosines)),
        min_cosine=float(np.min(cosines)),
        sqnr_db=sqnr,
        max_abs_error=max_abs,
        top1_accuracy=acc,
        baseline_top1_accuracy=base_acc,
        top1_headroom_db=headroom,
        top1_flips_cleared_db=cleared,
        top1_flip_db=flip_db,
        top1_clear_db=clear_db,
        top1_accuracy_events_db=events,
    )


def top1_scale_interval(
    reference: np.ndarray, candidate: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of (N, C) scores, the noise scales (lo, hi) between which
    reference + k * (candidate - reference) has `target` as its top class (lo >= hi:
    none). Class j is below the target t while (ref_t - ref_j) + k (e_t - e_j) > 0,
    a half-line in k; the interval is where all of them hold."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = np.asarray(candidate, dtype=np.float64) - ref
    rows = np.arange(len(ref))
    t = np.asarray(target)
    gap = ref[rows, t][:, None] - ref
    slope = noise[rows, t][:, None] - noise
    gap[rows, t], slope[rows, t] = 1.0, 0.0  # the target against itself: no constraint
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -gap / slope
    lo = np.maximum(np.where(slope > 0, bound, 0.0).max(axis=-1), 0.0)
    hi = np.where(slope < 0, bound, np.inf).min(axis=-1)
    never = ((slope == 0) & (gap <= 0)).any(axis=-1)
    return lo, np.where(never, 0.0, hi)


def noise_scale_keeping_top1(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per sample of (N, C) scores, the k below which reference + k * (candidate -
    reference) keeps the reference's top-1 class (inf: no scaling of this noise moves
    it). Class j overtakes the top class t where k * (e_j - e_t) reaches their gap."""
    ref = np.asarray(reference, dtype=np.float64)
    return top1_scale_interval(ref, candidate, ref.argmax(axis=-1))[1]


def _db(scale: float) -> float:
    """A noise scale as the SQNR change it means (20 log10), within the cap."""
    return float(np.clip(20.0 * math.log10(max(scale, 1e-300)), -SQNR_CAP_DB, SQNR_CAP_DB))


def _top1_margins(
    ref: np.ndarray, cand: np.ndarray, agree: np.ndarray
) -> tuple[float | None, float | None, tuple[float, ...] | None, tuple[float, ...] | None]:
    """(top1_headroom_db, top1_flips_cleared_db, top1_flip_db, top1_clear_db); see the
    module docstring."""
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cand))):
        return None, None, None, None
    k = noise_scale_keeping_top1(ref, cand)
    # agreement is label accuracy with the reference's own top class as the label: each
    # sample's interval starts at 0, so flips only leave (lower) and clears only join
    events = _scale_events(np.zeros_like(k), k)
    flip_db = tuple(d for d, _ in events["lower"])
    clear_db = tuple(d for d, _ in events["higher"])
    flips, clears = k[agree & np.isfinite(k)], k[~agree]
    headroom = _db(float(flips.min())) if flips.size else None
    cleared = -_db(float(clears.min())) if clears.size else None
    return headroom, cleared, flip_db, clear_db


def _label_events(
    ref: np.ndarray, cand: np.ndarray, labels: np.ndarray
) -> dict[str, tuple[tuple[float, int], ...]] | None:
    """`top1_accuracy_events_db`: where the count of correctly labelled samples changes
    as the noise is scaled. Label accuracy need not fall monotonically with noise: the
    noise can also move a sample FP32 gets wrong onto its label."""
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cand))):
        return None
    return _scale_events(*top1_scale_interval(ref, cand, labels))


def _scale_events(lo: np.ndarray, hi: np.ndarray) -> dict[str, tuple[tuple[float, int], ...]]:
    """Where the count of samples inside their noise-scale interval (lo, hi) changes as
    the scale moves away from 1, in dB of SQNR away from the candidate's, the
    FLIP_DB_KEPT nearest each way: "lower" (more noise) and "higher" (less), each a
    (dB, +1 | -1) pair."""
    some = lo < hi
    lower = [(_db(float(x)), +1) for x in lo[some & (lo > 1)]]
    lower += [(_db(float(x)), -1) for x in hi[some & (hi > 1) & np.isfinite(hi)]]
    higher = [(-_db(float(x)), -1) for x in lo[some & (lo > 0) & (lo < 1)]]
    higher += [(-_db(float(x)), +1) for x in hi[some & (hi < 1)]]

    def nearest(events: list[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
        return tuple((round(d, 4), c) for d, c in sorted(events)[:FLIP_DB_KEPT])

    return {"lower": nearest(lower), "higher": nearest(higher)}


def _class_axis_size(shape: tuple[int, ...]) -> int | None:
    """C when `shape` is (N, ...) with one axis of C >= 2 and the rest 1, else None."""
    wide = [d for d in shape[1:] if d != 1]
    return wide[0] if len(wide) == 1 and wide[0] >= 2 else None


def compare_all(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    names: list[str],
    *,
    judged: int = 0,
    labels: np.ndarray | None = None,
    class_scores: bool = True,
) -> Accuracy:
    """Every output compared; the result carries the `judged` output's metrics (what
    gates and the summary read) and, in `outputs`, each output's by name. Labels
    belong to the judged output only."""
    per_output = {
        name: compare_outputs(ref, cand, labels if i == judged else None, class_scores=class_scores)
        for i, (name, ref, cand) in enumerate(zip(names, reference, candidate, strict=True))
    }
    main = per_output[names[judged]]
    table = {
        name: {k: v for k, v in acc.to_dict().items() if k not in ("output", "outputs")}
        for name, acc in per_output.items()
    }
    return replace(main, output=names[judged], outputs=table)


def _sqnr_db(signal: float, noise: float) -> float:
    if math.isnan(signal) or math.isnan(noise):
        return math.nan
    if noise == 0:
        return SQNR_CAP_DB
    if signal == 0 or math.isinf(noise):
        return -SQNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of the rows of a and b (NaN where either row has NaN)."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    one_zero = (na == 0) ^ (nb == 0)
    denom = np.where((na == 0) | (nb == 0), 1.0, na * nb)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, dot / denom))
    return np.clip(cos, -1.0, 1.0)


def run_batched(
    runner: Runner,
    inputs: Mapping[str, np.ndarray],
    batch_size: int = 32,
    *,
    progress: Callable[[int, int], None] | None = None,
    pad_last: bool = False,
) -> list[np.ndarray]:
    """Stream `inputs` (same number of samples each) through an active runner in batches.

    Returns each output concatenated over the batches, in the runner's order.
    The first output (the one metrics compare) must have the batch first; with
    `pad_last`, every output must. With `pad_last`, a short last batch is padded
    to `batch_size` by repeating its last sample and the padding's outputs are
    dropped, so models exported with a fixed batch size of `batch_size` work too.
    `progress(done, total)` gets the number of samples done after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    arrays = {name: np.asarray(x) for name, x in inputs.items()}
    first = next(iter(arrays.values()), np.zeros(0))
    if first.ndim == 0 or len(first) == 0:
        raise InvalidInput(
            f"evaluation data must be a non-empty batch of samples, got {first.shape}"
        )
    total = len(first)
    chunks: list[list[np.ndarray]] = []
    for start in range(0, total, batch_size):
        real = min(batch_size, total - start)
        feeds = {name: np.ascontiguousarray(x[start : start + real]) for name, x in arrays.items()}
        if pad_last and real < batch_size:
            feeds = {
                name: np.concatenate([x, np.repeat(x[-1:], batch_size - real, axis=0)], axis=0)
                for name, x in feeds.items()
            }
        sent = batch_size if pad_last else real
        outs = [np.asarray(o) for o in runner.infer(feeds)]
        for i, out in enumerate(outs if pad_last else outs[:1]):
            if out.ndim == 0 or out.shape[0] != sent:
                raise InvalidInput(
                    f"model output {i} has shape {out.shape}, not the batch of {sent} first"
                )
        chunks.append([o[:real] for o in outs] if pad_last else outs)
        if progress is not None:
            progress(start + real, total)
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]
