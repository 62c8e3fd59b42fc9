"""edgec bench A B ...: several artifacts timed in paired alternating blocks, each with
its ratio to the first; one argument behaves as before. No timing is asserted beyond
orderings and counts."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from compiler.bench_many import bench
from compiler.cli import main
from targets.registry import get_target


def test_several_are_paired_in_alternating_blocks(small_cnn_onnx: Path) -> None:
    args = [str(small_cnn_onnx), "digits_cnn", str(small_cnn_onnx)]
    results = bench(args, get_target("cpu"), threads=1, batch=1, shape=None)
    assert [r.label for r in results] == [args[0], "digits_cnn", f"{args[0]}#2"]
    assert [r.model for r in results] == ["small_cnn", "digits_cnn", "small_cnn"]
    assert results[0].ratio_to_first == 1.0
    for r in results:
        # blocks of the same size, one per round, the same number of rounds for each
        assert r.stats.block_size > 0 and len(r.stats.block_medians()) >= 3
        assert r.stats.iterations == results[0].stats.iterations
        assert r.ratio_to_first > 0 and r.stats.p50 <= r.stats.p99


def test_bench_cli_several_and_one(small_cnn_onnx: Path) -> None:
    runner = CliRunner()
    two = runner.invoke(
        main, ["bench", str(small_cnn_onnx), "digits_cnn", "--threads", "1", "--json"]
    )
    assert two.exit_code == 0, two.output
    data = json.loads(two.output)
    assert data["paired"] is True and [r["model"] for r in data["runs"]] == [
        "small_cnn",
        "digits_cnn",
    ]
    assert data["runs"][0]["ratio_to_first"] == 1.0 and data["runs"][1]["ratio_to_first"] > 0
    assert all(r["latency_ms"]["p99"] >= r["latency_ms"]["p50"] > 0 for r in data["runs"])
    table = runner.invoke(main, ["bench", str(small_cnn_onnx), "digits_cnn", "--threads", "1"])
    assert table.exit_code == 0 and "latency / first" in table.output
    one = runner.invoke(main, ["bench", str(small_cnn_onnx), "--threads", "1", "--json"])
    assert one.exit_code == 0, one.output
    assert set(json.loads(one.output)) == {"model", "target", "latency_ms"}  # as before
    missing = runner.invoke(main, ["bench", str(small_cnn_onnx), "no_such_model", "--json"])
    assert missing.exit_code in (2, 4) and len(missing.output.strip().splitlines()) == 1


def test_bench_cli_shapes_each_input_of_several_by_name(tmp_path: Path) -> None:
    """A two-input model with a dynamic sequence: `--input-shape NAME:DIMS`, repeated,
    shapes each input (it was refused as 'not a list of integers'); a bare shape for
    it, or a name it lacks, exits 2 or 4 with one line."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "S"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", "S"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    runner = CliRunner()
    shapes = ["--input-shape", "a:1,16", "--input-shape", "b:1,16"]
    ok = runner.invoke(main, ["bench", str(path), str(path), "--threads", "1", "--json", *shapes])
    assert ok.exit_code == 0, ok.output
    assert [r["ratio_to_first"] > 0 for r in json.loads(ok.output)["runs"]] == [True, True]
    for bad in (["--input-shape", "1,16", "--input-shape", "b:1,16"], ["--input-shape", "c:1,16"]):
        refused = runner.invoke(main, ["bench", str(path), "--threads", "1", *bad])
        assert refused.exit_code in (2, 4), refused.output
        assert len(refused.output.strip().splitlines()) == 1, refused.output
