"""Inputs of every kind (#13 part 2): float16 and bool inputs get data of their kind;
INT8 of a model that computes in float16 is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main


def half_model(path: Path) -> Path:
    """y = MatMul(x, w) * Cast(flag): x float16 (N, 8), flag bool (N, 1)."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float16), "w"
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Cast", ["flag"], ["f"], to=TensorProto.FLOAT16),
            helper.make_node("Mul", ["m", "f"], ["y"]),
        ],
        "half",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 8]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _run(tmp_path: Path, *flags: str) -> tuple[int, str]:
    src = half_model(tmp_path / "half.onnx")
    result = CliRunner().invoke(
        main, ["compile", str(src), "--out", str(tmp_path / "out"), "--report", "json", *flags]
    )
    return result.exit_code, result.output


def test_float16_and_bool_inputs_compile_and_the_report_says_what_the_data_was(
    tmp_path: Path,
) -> None:
    code, text = _run(tmp_path)
    assert code == 0, text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "random normal floats" in report["accuracy"]["source"]
    assert "flag random bools" in report["accuracy"]["source"]
    assert report["accuracy"]["max_abs_error"] == 0.0


def test_int8_of_a_float16_model_is_refused_before_any_work(tmp_path: Path) -> None:
    code, text = _run(tmp_path, "--precision", "int8", "--calib", "random")
    assert code == 4, text
    assert "float32" in text and "'x'" in text and "--precision fp16" in text
    assert not (tmp_path / "out").exists()
