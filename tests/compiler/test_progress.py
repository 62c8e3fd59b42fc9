"""Progress for every long step (#17 part 4): a digits_cnn INT8 compile reports each
stage that can take seconds on a bigger model, each one counting up to its total.
And the torch eager baseline's settings (#17 part 6) are in the report."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from compiler.config import Budgets, CompileConfig
from compiler.pipeline import compile_model

#: the steps that take over ~2 s on a real model (mobilenet_v2, resnet50), and the
#: measure stage's own; QAT and pruning fine-tuning have their own tests below
LONG_STAGES = (
    "calibrate",
    "range_search",
    "rounding",
    "bias_correction",
    "sensitivity",
    "fallback",
    "reference",
    "latency",
    "torch",
)


def record() -> tuple[dict[str, list[tuple[int, int]]], object]:
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def progress(stage: str, done: int, total: int) -> None:
        seen[stage.partition("|")[0]].append((done, total))

    return seen, progress


def assert_counts_up(calls: list[tuple[int, int]], stage: str) -> None:
    assert calls, stage
    dones = [d for d, _ in calls]
    assert dones == sorted(dones), f"{stage} went backwards: {calls}"
    assert len({t for _, t in calls}) == 1, f"{stage} changed its total: {calls}"
    assert 0 <= dones[0] and dones[-1] == calls[-1][1] > 0, f"{stage} did not finish: {calls}"


@pytest.fixture(scope="module")
def int8_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, list[tuple[int, int]]], dict[str, Any]]:
    seen, progress = record()
    config = CompileConfig(
        model="digits_cnn",
        precision="int8",
        auto_fallback=True,  # the float fallback's search, after sensitivity
        budgets=Budgets(min_accuracy=0.999),
        out_dir=tmp_path_factory.mktemp("progress") / "o",
        threads=1,
        reports=("json",),
    )
    result = compile_model(config, progress)  # type: ignore[arg-type]
    return seen, result.report


def test_int8_compile_reports_every_long_step(
    int8_run: tuple[dict[str, list[tuple[int, int]]], dict[str, Any]],
) -> None:
    seen, _ = int8_run
    for stage in LONG_STAGES:
        assert_counts_up(seen[stage], stage)
    assert any(s.startswith("eval ") for s in seen)
    for stage, calls in seen.items():  # every stage, these and the rest, counts up
        assert_counts_up(calls, stage)


def test_torch_baseline_settings_are_recorded_and_match_onnxruntime(
    int8_run: tuple[dict[str, list[tuple[int, int]]], dict[str, Any]],
) -> None:
    _, report = int8_run
    baseline, latency = report["baseline"], report["latency_ms"]
    assert baseline["torch_latency_ms"] > 0
    assert baseline["torch_threads"] == latency["threads"] == 1
    assert baseline["torch_warmup"] == latency["warmup"] > 0


def test_equalization_reports_its_statistics_pass() -> None:
    """digits_cnn has no Conv → Relu → Conv pair to equalize; a model that has one."""
    import numpy as np
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from passes.quantize.equalize import equalize

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
        ],
        "pair",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [w1, w2],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = ir.from_proto(proto)
    batches = [{"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    seen: list[tuple[int, int | None]] = []
    equalize(model, batches, progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == [4, 8, 12]


@pytest.mark.slow
def test_pruning_finetune_reports_epochs(tmp_path: Path) -> None:
    seen, progress = record()
    config = CompileConfig(
        model="digits_cnn",
        prune_ratio=0.25,
        prune_mode="channel",
        finetune_epochs=1,
        out_dir=tmp_path / "o",
        threads=1,
        reports=("json",),
        torch_baseline=False,
    )
    compile_model(config, progress)  # type: ignore[arg-type]
    assert_counts_up(seen["finetune"], "finetune")


@pytest.mark.slow
def test_qat_reports_its_steps(tmp_path: Path) -> None:
    seen, progress = record()
    config = CompileConfig(
        model="digits_cnn",
        precision="int8",
        qat=True,
        epochs=1,
        out_dir=tmp_path / "o",
        threads=1,
        reports=("json",),
        torch_baseline=False,
    )
    compile_model(config, progress)  # type: ignore[arg-type]
    assert_counts_up(seen["qat"], "qat")
