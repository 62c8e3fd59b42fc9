from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx.parser
import onnx_ir as ir
import pytest

from compiler.evaluate import (
    SQNR_CAP_DB,
    Accuracy,
    compare_outputs,
    noise_scale_keeping_top1,
    run_batched,
    top1_scale_interval,
)
from compiler.ground.errors import InvalidInput
from targets.cpu import CpuTarget

ACCURACY_KEYS = {
    "samples", "top1_agreement", "top5_agreement", "cosine", "min_cosine", "sqnr_db",
    "max_abs_error",
    "top1_accuracy", "baseline_top1_accuracy", "top1_headroom_db", "top1_flips_cleared_db",
    "top1_flip_db", "top1_clear_db", "top1_accuracy_events_db", "output", "outputs",
}  # fmt: skip


def _logits(n: int = 8, c: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def test_identical_outputs() -> None:
    ref = _logits()
    acc = compare_outputs(ref, ref.copy())
    assert acc == Accuracy(
        samples=8,
        top1_agreement=1.0,
        top5_agreement=1.0,
        cosine=pytest.approx(1.0),  # type: ignore[arg-type]
        min_cosine=pytest.approx(1.0),  # type: ignore[arg-type]
        sqnr_db=SQNR_CAP_DB,
        max_abs_error=0.0,
        top1_accuracy=None,
        baseline_top1_accuracy=None,
        top1_flip_db=(),  # no scaling of no noise flips anything
        top1_clear_db=(),
    )
    d = acc.to_dict()
    assert set(d) == ACCURACY_KEYS and d["sqnr_db"] == 200.0
    json.dumps(d, allow_nan=False)


def test_top1_margins_say_how_far_the_noise_is_from_the_next_flip() -> None:
    ref = np.array([[1.0, 0.8, 0.0], [3.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    noise = np.array([[0.0, 0.1, 0.0], [0.0, 0.5, 0.0], [0.3, 0.0, 0.0]])
    acc = compare_outputs(ref, ref + noise)
    # row 1 flips at k = 0.2 / 0.1 = 2, row 2 at 3 / 0.5 = 6; row 3 already flipped, and
    # agrees again below k = 0.1 / 0.3
    np.testing.assert_allclose(noise_scale_keeping_top1(ref, ref + noise), [2.0, 6.0, 1 / 3])
    assert acc.top1_agreement == pytest.approx(2 / 3)
    assert acc.top1_headroom_db == pytest.approx(20 * math.log10(2.0))
    assert acc.top1_flips_cleared_db == pytest.approx(20 * math.log10(3.0))
    assert acc.top1_flip_db == pytest.approx((20 * math.log10(2.0), 20 * math.log10(6.0)), abs=1e-4)
    assert acc.top1_clear_db == pytest.approx((20 * math.log10(3.0),), abs=1e-4)
    clean = compare_outputs(ref[:2], ref[:2] + noise[:2])
    assert clean.top1_flips_cleared_db is None and clean.top1_headroom_db == acc.top1_headroom_db
    only_top_rises = compare_outputs(ref[1:2], ref[1:2] + np.array([[1.0, 0.0, 0.0]]))
    assert only_top_rises.top1_headroom_db is None  # no scaling of this noise flips it


def test_top1_margins_match_brute_force_scaling() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((300, 12))
    cand = ref + rng.normal(scale=0.4, size=ref.shape)
    acc = compare_outputs(ref, cand)
    assert acc.top1_headroom_db is not None and acc.top1_flips_cleared_db is not None
    top = ref.argmax(1)
    grow = 10 ** (acc.top1_headroom_db / 20)
    shrink = 10 ** (-acc.top1_flips_cleared_db / 20)
    agree = cand.argmax(1) == top
    for k, expect_all in ((grow * 0.999, True), (grow * 1.001, False)):
        still = (ref + k * (cand - ref)).argmax(1) == top
        assert still[agree].all() == expect_all
    assert ((ref + 0.999 * shrink * (cand - ref)).argmax(1) == top).all()
    assert not ((ref + 1.001 * shrink * (cand - ref)).argmax(1) == top).all()


def _correct_at(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray, db: float) -> int:
    """Samples whose argmax is their label with the noise scaled to `db` of SQNR lower."""
    k = 10 ** (db / 20)
    return int(((ref + k * (cand - ref)).argmax(1) == labels).sum())


def test_label_accuracy_events_match_brute_force_scaling() -> None:
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((400, 6))
    cand = ref + rng.normal(scale=0.5, size=ref.shape)
    labels = rng.integers(0, 6, size=400)
    acc = compare_outputs(ref, cand, labels)
    events = acc.top1_accuracy_events_db
    assert events is not None and acc.top1_accuracy is not None
    now = round(acc.top1_accuracy * 400)
    assert _correct_at(ref, cand, labels, 0.0) == now
    # both ways there are samples that go right and samples that go wrong
    for side, sign in (("lower", 1), ("higher", -1)):
        assert {c for _, c in events[side]} == {-1, 1}
        count = now
        for db, change in events[side]:
            assert 0 < db < 200
            count += change
            # just past each event the count is what the events add up to
            assert _correct_at(ref, cand, labels, sign * (db + 1e-3)) == count
    assert len(events["lower"]) == 32  # FLIP_DB_KEPT nearest of more


def test_label_interval_is_where_the_label_is_on_top() -> None:
    # the label (1) is behind by 0.5 and gains 1.0 per unit of noise against class 0, and
    # class 2 gains 0.25 a unit on it from 1.0 behind: it is on top for 0.5 < k < 4
    ref = np.array([[1.0, 0.5, -0.5]])
    cand = ref + np.array([[-1.0, 0.0, 0.25]])
    lo, hi = top1_scale_interval(ref, cand, np.array([1]))
    np.testing.assert_allclose([lo[0], hi[0]], [0.5, 4.0])
    acc = compare_outputs(ref, cand, np.array([1]))
    assert acc.top1_accuracy == 1.0 and acc.baseline_top1_accuracy == 0.0
    assert acc.top1_accuracy_events_db == {
        "lower": ((round(20 * math.log10(4.0), 4), -1),),
        "higher": ((round(20 * math.log10(2.0), 4), -1),),
    }


def test_one_percent_scaling_is_40_db() -> None:
    ref = _logits(16, 10, seed=1).astype(np.float64)
    cand = ref * 1.01  # noise = 0.01² · signal → 10·log10(1e4) = 40 dB
    acc = compare_outputs(ref, cand)
    assert acc.sqnr_db == pytest.approx(40.0, abs=1e-9)
    assert acc.cosine == pytest.approx(1.0, abs=1e-12)  # scaling keeps the direction
    assert acc.max_abs_error == pytest.approx(0.01 * np.abs(ref).max(), rel=1e-12)
    assert acc.top1_agreement == 1.0


def test_additive_noise_sqnr() -> None:
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])  # Σ ref² = 25
    cand = ref + np.array([[0.5, 0.0], [0.0, 0.0]])  # Σ noise² = 0.25
    assert compare_outputs(ref, cand).sqnr_db == pytest.approx(20.0)


def test_topk_agreement_hand_computed() -> None:
    ref = np.tile(np.arange(7.0), (3, 1))  # every sample's top-1 class is 6
    cand = np.array(
        [
            [0, 1, 2, 3, 4, 5, 6],  # rank 1: top-1 and top-5 agree
            [0, 1, 2, 6, 4, 5, 3],  # class 6 scores 3, the 4th highest → top-5 only
            [6, 1, 2, 3, 4, 5, 0],  # class 6 ranks last → neither
        ],
        dtype=np.float64,
    )
    acc = compare_outputs(ref, cand)
    assert acc.top1_agreement == pytest.approx(1 / 3)
    assert acc.top5_agreement == pytest.approx(2 / 3)


def test_fewer_than_five_classes_uses_all_of_them() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cand = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    acc = compare_outputs(ref, cand)
    assert acc.top1_agreement == 0.5 and acc.top5_agreement == 1.0


def test_label_accuracies() -> None:
    ref = np.eye(4)[[0, 1, 2, 3]]  # reference predicts 0, 1, 2, 3
    cand = np.eye(4)[[0, 1, 3, 3]]  # candidate predicts 0, 1, 3, 3
    labels = np.array([0, 1, 2, 0])
    acc = compare_outputs(ref, cand, labels)
    assert acc.baseline_top1_accuracy == 0.75
    assert acc.top1_accuracy == 0.5
    assert acc.top1_agreement == 0.75


def test_cosine_hand_computed() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    cand = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    # per sample: 0, 1/√2, both zero → 1, one zero → 0
    acc = compare_outputs(ref, cand)
    assert acc.cosine == pytest.approx((0 + 1 / math.sqrt(2) + 1 + 0) / 4)
    assert acc.min_cosine == 0.0


def test_min_cosine_is_the_worst_sample() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    cand = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 3.0]])  # last: cos = 24/25
    acc = compare_outputs(ref, cand)
    assert acc.min_cosine == pytest.approx(0.96, abs=1e-12)
    assert acc.cosine == pytest.approx((1 + 1 + 0.96) / 3, abs=1e-12)


def test_outputs_that_are_not_class_scores_have_no_topk() -> None:
    ref = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])  # two unit embeddings
    cand = np.array([[0.8, 0.6, 0.0], [0.0, 0.6, 0.8]])  # the first's argmax flips
    scores = compare_outputs(ref, cand)
    assert scores.top1_agreement == 0.5
    embedding = compare_outputs(ref, cand, class_scores=False)
    assert embedding.top1_agreement is None and embedding.top5_agreement is None
    assert embedding.cosine == pytest.approx((0.96 + 1.0) / 2) and embedding.min_cosine == 0.96


def test_non_classification_outputs_have_no_topk() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 3, 4, 4))
    acc = compare_outputs(ref, -ref)
    assert acc.top1_agreement is None and acc.top5_agreement is None
    assert acc.cosine == pytest.approx(-1.0)
    assert acc.sqnr_db == pytest.approx(10 * math.log10(1 / 4))  # noise = (2·ref)²
    with pytest.raises(InvalidInput, match="labels"):
        compare_outputs(ref, ref, labels=np.array([0, 1]))
    one_logit = compare_outputs(ref[:, :1, 0, 0], ref[:, :1, 0, 0])
    assert one_logit.top1_agreement is None


def test_zero_reference_with_noise_is_capped_low() -> None:
    acc = compare_outputs(np.zeros((2, 3)), np.ones((2, 3)))
    assert acc.sqnr_db == -SQNR_CAP_DB and acc.max_abs_error == 1.0


def test_nan_candidate_serializes_as_null() -> None:
    ref = _logits(4, 5)
    cand = ref.copy()
    cand[1, 2] = np.nan
    d = compare_outputs(ref, cand).to_dict()
    assert d["sqnr_db"] is None and d["max_abs_error"] is None and d["cosine"] is None
    assert d["min_cosine"] is None
    json.dumps(d, allow_nan=False)


def test_bad_shapes_and_labels() -> None:
    with pytest.raises(InvalidInput, match="shape"):
        compare_outputs(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(InvalidInput, match="empty"):
        compare_outputs(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(InvalidInput, match="integer"):
        compare_outputs(_logits(2, 3), _logits(2, 3), labels=np.array([0.0, 1.0]))
    with pytest.raises(InvalidInput, match="2 integer"):
        compare_outputs(_logits(2, 3), _logits(2, 3), labels=np.array([0, 1, 2]))


class RecordingRunner:
    """Doubles its input; records the batch sizes it saw."""

    input_names = ["x"]

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __enter__(self) -> RecordingRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(feeds["x"]))
        return [feeds["x"] * 2, feeds["x"]]


@pytest.mark.parametrize("pad_last, batches", [(True, [32, 32, 32]), (False, [32, 32, 6])])
def test_run_batched_streams_and_trims(pad_last: bool, batches: list[int]) -> None:
    data = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    runner = RecordingRunner()
    seen: list[tuple[int, int]] = []
    out = run_batched(
        runner, {"x": data}, 32, progress=lambda *p: seen.append(p), pad_last=pad_last
    )
    assert len(out) == 2
    np.testing.assert_array_equal(out[0], data * 2)
    np.testing.assert_array_equal(out[1], data)
    assert runner.batches == batches and seen == [(32, 70), (64, 70), (70, 70)]


def test_run_batched_with_a_real_runner(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 5] x) => (float[N, 5] y) '
        "{ y = Softmax <axis = 1> (x) }"
    )
    artifact = CpuTarget().lower(ir.from_proto(proto), tmp_path, stem="softmax")
    data = np.random.default_rng(4).standard_normal((10, 5)).astype(np.float32)
    with CpuTarget().runner(artifact.path, threads=1) as r:
        (out,) = run_batched(r, {"x": data}, batch_size=4, pad_last=True)
    e = np.exp(data - data.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    assert compare_outputs(out, out).top1_agreement == 1.0


def test_run_batched_rejects_empty_data() -> None:
    with pytest.raises(InvalidInput):
        run_batched(RecordingRunner(), {"x": np.zeros((0, 3), np.float32)})
    with pytest.raises(ValueError):
        run_batched(RecordingRunner(), {"x": np.zeros((2, 3), np.float32)}, batch_size=0)


class _SummingRunner(RecordingRunner):
    """Returns the batch's sum: an output without the batch first."""

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [feeds["x"].sum(axis=0)]


def test_run_batched_rejects_outputs_without_the_batch_first() -> None:
    with pytest.raises(InvalidInput, match="batch of 2 first"):
        run_batched(_SummingRunner(), {"x": np.zeros((2, 3), np.float32)})


class _AddingRunner(RecordingRunner):
    input_names = ["x", "y"]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(feeds["y"]))
        return [feeds["x"] + feeds["y"]]


def test_run_batched_pads_every_input() -> None:
    x = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    y = np.full((5, 2), 10, np.float32)
    runner = _AddingRunner()
    (out,) = run_batched(runner, {"x": x, "y": y}, batch_size=2, pad_last=True)
    np.testing.assert_array_equal(out, x + y)
    assert runner.batches == [2, 2, 2]
