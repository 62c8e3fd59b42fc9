"""Every output judged (#13 part 3): per-output metrics, `--output NAME`, class scores of
any rank with one class axis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main
from compiler.evaluate import compare_all, compare_outputs


def two_output_model(path: Path) -> Path:
    """scores (N, 4, 1, 1): a convolutional classifier head; features (N, 4, 8, 8)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["features"]),
            helper.make_node("GlobalAveragePool", ["features"], ["scores"]),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4, 1, 1]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, 8, 8]),
        ],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _compile(tmp_path: Path, *flags: str) -> tuple[int, str, dict | None]:
    out = tmp_path / "out"
    src = two_output_model(tmp_path / "two.onnx")
    result = CliRunner().invoke(
        main, ["compile", str(src), "--out", str(out), "--report", "json", *flags]
    )
    report = out / "report.json"
    return (
        result.exit_code,
        result.output,
        json.loads(report.read_text()) if report.exists() else None,
    )


def test_every_output_is_compared_and_the_first_is_judged(tmp_path: Path) -> None:
    code, text, report = _compile(tmp_path, "--precision", "int8", "--calib", "random")
    assert code == 0, text
    accuracy = report["accuracy"]
    assert accuracy["output"] == "scores"
    assert set(accuracy["outputs"]) == {"scores", "features"}
    # (N, 4, 1, 1) are class scores: agreement is computed for them, not for the feature map
    assert accuracy["top1_agreement"] is not None
    assert accuracy["outputs"]["features"]["top1_agreement"] is None
    for metrics in accuracy["outputs"].values():
        assert 0.99 <= metrics["cosine"] <= 1.0
    assert accuracy["cosine"] == accuracy["outputs"]["scores"]["cosine"]


def test_output_flag_chooses_what_gates_judge(tmp_path: Path) -> None:
    code, text, report = _compile(tmp_path, "--output", "features", "--min-accuracy", "0.9")
    assert code == 0, text
    assert report["accuracy"]["output"] == "features"
    assert report["accuracy"]["top1_agreement"] is None  # a feature map has no classes
    gate = next(g for g in report["gates"] if g["name"] == "min_accuracy")
    assert gate["value"] == report["accuracy"]["outputs"]["features"]["cosine"]


def test_unknown_output_name_exits_2_listing_the_outputs(tmp_path: Path) -> None:
    code, text, report = _compile(tmp_path, "--output", "logits")
    assert code == 2, text
    line = text.strip()
    assert "\n" not in line and "'logits'" in line and "scores, features" in line
    assert report is None and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("shape", "classes"), [((6, 5), 5), ((6, 5, 1, 1), 5), ((6, 1, 5), 5), ((6, 5, 2), None)]
)
def test_class_scores_of_any_rank_with_one_class_axis(
    shape: tuple[int, ...], classes: int | None
) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=shape)
    cand = ref + rng.normal(scale=1e-3, size=shape)
    acc = compare_outputs(ref, cand)
    assert (acc.top1_agreement is not None) == (classes is not None)
    if classes is not None:
        assert acc.top1_agreement == 1.0


def test_labels_belong_to_the_judged_output() -> None:
    rng = np.random.default_rng(2)
    scores, boxes = rng.normal(size=(8, 3)), rng.normal(size=(8, 4, 2))
    labels = scores.argmax(1)
    acc = compare_all([scores, boxes], [scores, boxes], ["scores", "boxes"], labels=labels)
    assert acc.top1_accuracy == 1.0 and acc.outputs is not None
    assert acc.outputs["boxes"]["top1_accuracy"] is None
