"""Custom-domain operators (#13 part 4): com.microsoft contrib ops pass through untouched
to onnxruntime targets; a standard-ONNX-only target refuses them by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main
from compiler.ground.errors import InvalidInput
from compiler.stages.model_checks import check_custom_domains


def contrib_model() -> onnx.ModelProto:
    """MatMul → com.microsoft.Gelu → MatMul."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Gelu", ["m"], ["g"], domain="com.microsoft"),
            helper.make_node("MatMul", ["g", "w"], ["y"]),
        ],
        "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [w],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 8
    return model


@pytest.mark.parametrize("flags", [(), ("--precision", "int8", "--calib", "random")])
def test_contrib_ops_pass_through_to_onnxruntime(tmp_path: Path, flags: tuple[str, ...]) -> None:
    src = tmp_path / "contrib.onnx"
    src.write_bytes(contrib_model().SerializeToString())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["compile", str(src), "--out", str(out), "--report", "json", *flags]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    artifact = onnx.load(report["artifact"]["path"])
    assert [n.op_type for n in artifact.graph.node if n.domain == "com.microsoft"] == ["Gelu"]
    # int8 of a random 8x8 MLP on random inputs measured 0.9958
    assert report["accuracy"]["cosine"] >= (0.99 if flags else 0.999999)


def test_a_standard_only_target_refuses_them_by_name() -> None:
    with pytest.raises(InvalidInput, match=r"com\.microsoft\.Gelu.*--target cpu or cuda"):
        check_custom_domains(contrib_model(), "tensorrt", standard_only=True)
    check_custom_domains(contrib_model(), "cpu", standard_only=False)
