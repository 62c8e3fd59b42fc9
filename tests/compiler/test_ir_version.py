"""ONNX files as the onnx package writes them today (IR 14) compile; a newer IR that is
needed is refused with the reason (exit 4)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from compiler.cli import main
from compiler.ground.errors import InvalidInput
from compiler.ir_version import ORT_MAX_IR_VERSION, fit_ir_version


def _mlp(ir_version: int, *, cast_to: int = TensorProto.FLOAT) -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.linspace(-1, 1, 12).tolist())
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Cast", ["h"], ["c"], name="cast", to=cast_to),
        helper.make_node("Cast", ["c"], ["y"], name="back", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = ir_version
    return model


def test_onnx_packages_default_ir_is_written_down_and_the_file_kept(tmp_path: Path) -> None:
    assert onnx.IR_VERSION > ORT_MAX_IR_VERSION  # what this test is about
    src = tmp_path / "mlp.onnx"
    onnx.save(_mlp(onnx.IR_VERSION), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "o"
    res = CliRunner().invoke(
        main, ["compile", str(src), "--out", str(out), "--report", "json", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert onnx.load(report["artifact"]["path"]).ir_version == ORT_MAX_IR_VERSION
    assert report["accuracy"]["max_abs_error"] < 1e-5
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # the input is only read


def test_a_type_the_newer_ir_added_is_refused_with_where_it_is(tmp_path: Path) -> None:
    model = _mlp(14, cast_to=TensorProto.FLOAT6E2M3)
    with pytest.raises(InvalidInput, match=r"needs ONNX IR version 14 \(attribute 'to' of node "):
        fit_ir_version(model, name="m.onnx")
    assert model.ir_version == 14  # refused models are left as they were
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    res = CliRunner().invoke(main, ["compile", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 4 and "FLOAT6E2M3" in res.output
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "o").exists()


def test_an_ir_newer_than_the_table_is_refused_and_an_old_one_untouched() -> None:
    with pytest.raises(InvalidInput, match="cannot tell whether the model needs IR 15"):
        fit_ir_version(_mlp(15), name="m.onnx")
    old = _mlp(8)
    assert fit_ir_version(old, name="m.onnx") is None and old.ir_version == 8
