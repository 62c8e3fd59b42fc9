"""Per-input shapes (#13 part 1): `--input-shape NAME:DIMS`, repeatable, for models with
several inputs; the bare form stays for single-input models; the artifact keeps the
model's dynamic axes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main


def two_inputs(path: Path) -> Path:
    """y = MatMul(a + b, w): a and b (batch, ?, 4) whose second axis has no name, c fixes 4."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    dynamic = ["batch", None, 4]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("MatMul", ["s", "w"], ["y"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, dynamic),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, dynamic),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dynamic)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _run(tmp_path: Path, *flags: str) -> tuple[int, str]:
    src = two_inputs(tmp_path / "two.onnx")
    result = CliRunner().invoke(
        main, ["compile", str(src), "--out", str(tmp_path / "out"), "--report", "json", *flags]
    )
    return result.exit_code, result.output


def test_named_shapes_size_the_data_and_the_artifact_stays_dynamic(tmp_path: Path) -> None:
    code, text = _run(tmp_path, "--input-shape", "a:1,6,4", "--input-shape", "b:1,6,4")
    assert code == 0, text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    artifact = onnx.load(report["artifact"]["path"])
    for vi in artifact.graph.input:
        axis1 = vi.type.tensor_type.shape.dim[1]
        assert not axis1.HasField("dim_value"), f"{vi.name} lost its dynamic axis"
    assert report["accuracy"]["cosine"] == pytest.approx(1.0)


def test_config_file_takes_the_same_list(tmp_path: Path) -> None:
    config = tmp_path / "edgec.toml"
    config.write_text('input_shape = ["a:1,3,4", "b:1,3,4"]\n')
    code, text = _run(tmp_path, "--config", str(config))
    assert code == 0, text


@pytest.mark.parametrize(
    ("flags", "code", "says"),
    [
        (
            ("--input-shape", "a:1,6,4"),
            2,
            "input 'b' has a dynamic dimension at axis 1: give --input-shape b:DIMS",
        ),
        (("--input-shape", "c:1,6,4"), 2, "no input 'c'; its inputs: a, b"),
        (
            ("--input-shape", "a:1,6", "--input-shape", "b:1,6,4"),
            4,
            "has rank 2 but input 'a' has rank 3",
        ),
        (
            ("--input-shape", "a:1,6,5", "--input-shape", "b:1,6,4"),
            4,
            "axis 2 is 5 but the model fixes it at 4",
        ),
        (("--input-shape", "1,6,4"), 2, "give NAME:DIMS for each input you shape"),
        (("--input-shape", "1,6,4", "--input-shape", "a:1,6,4"), 2, "or NAME:DIMS for each input"),
        (("--input-shape", "a:1,6,4", "--input-shape", "a:1,7,4"), 2, "names input 'a' twice"),
    ],
    ids=["one-missing", "unknown-name", "wrong-rank", "fixed-dim", "bare-on-two", "mixed", "twice"],
)
def test_wrong_shapes_exit_with_what_the_model_expects(
    tmp_path: Path, flags: tuple[str, ...], code: int, says: str
) -> None:
    got, text = _run(tmp_path, *flags)
    assert got == code, text
    line = text.strip()
    assert "\n" not in line and line.startswith("edgec: error: ")
    assert says in line
    assert not (tmp_path / "out").exists()
