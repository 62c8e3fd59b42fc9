"""`--precision fp16` end to end on the CPU: onnxruntime's CPU provider runs float16 kernels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from compiler.cli import main


def _compile(*args: str) -> tuple[int, str, dict]:
    res = CliRunner().invoke(main, ["compile", *args, "--report", "json", "--threads", "2"])
    out = Path(args[args.index("--out") + 1])
    report = json.loads((out / "report.json").read_text()) if res.exit_code in (0, 3) else {}
    return res.exit_code, res.output, report


def _input_types(path: str) -> list[int]:
    return [i.type.tensor_type.elem_type for i in onnx.load(path).graph.input]


def test_digits_cnn_fp16_keeps_agreement_at_half_the_size(tmp_path: Path) -> None:
    code, text, report = _compile("digits_cnn", "--precision", "fp16", "--out", str(tmp_path / "o"))
    assert code == 0, text
    acc = report["accuracy"]
    assert (
        report["precision"] == "fp16" and acc["top1_agreement"] >= 0.99 and acc["cosine"] >= 0.999
    )
    assert 0.45 <= report["baseline"]["size_ratio"] <= 0.6
    fp16 = report["fp16"]
    assert fp16["converted"] > 0 and fp16["keep_io_types"] is False
    assert any(p["name"] == "Fp16Pass" and p["changed"] for p in report["passes"])
    assert _input_types(report["artifact"]["path"]) == [onnx.TensorProto.FLOAT16]
    assert report["seconds"]["calibrate"] > 0  # the conversion's reference run


def test_keep_io_types_on_an_onnx_file_with_its_own_calibration_data(
    small_cnn_onnx: Path, tmp_path: Path
) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "o"
    code, text, report = _compile(
        str(small_cnn_onnx), "--precision", "fp16", "--keep-io-types", "--calib", str(calib),
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, text
    assert report["accuracy"]["cosine"] >= 0.999 and report["fp16"]["keep_io_types"] is True
    assert report["fp16"]["calibration_data"] == str(calib)
    assert _input_types(report["artifact"]["path"]) == [onnx.TensorProto.FLOAT]


def test_fp16_flags_are_checked_before_any_work(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, text, _ = _compile("digits_cnn", "--keep-io-types", "--out", str(out))
    assert code == 2 and "--keep-io-types applies to --precision fp16" in text
    code, text, _ = _compile(str(small_cnn_onnx), "--precision", "fp16", "--out", str(out))
    assert code == 2 and "give calibration data with --calib" in text
    assert not out.exists()


def test_a_model_that_fixes_its_batch_is_calibrated_in_batches_of_it(tmp_path: Path) -> None:
    """The reference run feeds exactly the model's own batch size (was batches of 8: exit 4)."""
    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8] x) => (float[1, 4] y) { h = MatMul(x, w)  y = Relu(h) }"""
    )
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    src, calib = tmp_path / "fixed.onnx", tmp_path / "calib.npy"
    onnx.save(proto, src)
    np.save(calib, np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32))
    out = tmp_path / "o"
    code, text, report = _compile(
        str(src), "--precision", "fp16", "--calib", str(calib), "--out", str(out)
    )
    assert code == 0, text
    assert report["accuracy"]["cosine"] >= 0.999 and report["fp16"]["converted"] > 0
