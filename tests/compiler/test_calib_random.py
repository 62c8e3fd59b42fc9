"""`--calib random` and old opsets: INT8 on a file that comes with neither data nor opset 13.

The onnx package's own `light_*` models are opset 9 and ship no calibration data;
`--calib random` draws seeded inputs of the declared kinds (flagged in the report as
unrepresentative) and the INT8 stage upgrades the opset with onnx's version converter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def opset9_classifier(path: Path) -> Path:
    """Conv → Relu → GlobalAveragePool → Flatten → MatMul at opset 9, IR 4, fixed batch 1."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 10)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "op9",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    path.write_bytes(model.SerializeToString())
    return path


def _compile(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["compile", *args, "--report", "json"])
    return result.exit_code, result.output


def test_opset9_model_compiles_in_int8_with_random_calibration(tmp_path: Path) -> None:
    src = opset9_classifier(tmp_path / "op9.onnx")
    before = src.read_bytes()
    code, text = _compile(
        str(src), "--precision", "int8", "--calib", "random", "--out", str(tmp_path / "o")
    )
    assert code == 0, text
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    calibration = report["quantization"]["calibration_data"]
    assert calibration.startswith("random") and "not representative" in calibration
    artifact = onnx.load(report["artifact"]["path"])
    assert max(o.version for o in artifact.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert any(n.op_type == "QuantizeLinear" for n in artifact.graph.node)
    # random weights on random inputs: the int8 model still follows the fp32 one closely
    assert report["accuracy"]["cosine"] >= 0.99
    assert src.read_bytes() == before  # the FP32 original is judged as it came


def test_without_calibration_data_the_error_names_random(tmp_path: Path) -> None:
    src = opset9_classifier(tmp_path / "op9.onnx")
    code, text = _compile(str(src), "--precision", "int8", "--out", str(tmp_path / "o"))
    assert code == 2, text
    assert "--calib" in text and "random" in text
    assert not (tmp_path / "o").exists()


#: Models too big to run here, with why (none since GPTQ's Hessians are memory-bounded:
#: light_vgg19 was OOM-killed at 24 GB for its 25088-input FC layer's 5 GB float64
#: Hessian; that layer now keeps nearest rounding, and the run peaks at 7.2 GB RSS)
_TOO_BIG: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(name, marks=pytest.mark.skip(reason=_TOO_BIG[name]))
        if name in _TOO_BIG
        else name
        for name in sorted(p.name for p in LIGHT.glob("light_*.onnx"))
    ],
)
def test_onnx_light_models_compile_in_int8(tmp_path: Path, model: str) -> None:
    """The done-criterion of issue #13: the onnx package's opset-9 models in INT8."""
    code, text = _compile(
        str(LIGHT / model),
        "--precision",
        "int8",
        "--calib",
        "random",
        "--calib-samples",
        "8",
        "--eval-samples",
        "4",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 0, text
