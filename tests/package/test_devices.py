"""`edgec devices` and `edgec compile --device`: profile defaults under config files and flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.devices import device_defaults, under_device
from compiler.ground.errors import UsageError
from tests.package.conftest import QUICK, run_cli


def test_devices_lists_every_profile_and_why_xavier_has_no_tensorrt() -> None:
    code, text = run_cli("devices", "--json")
    assert code == 0, text
    rows = {r["name"]: r for r in json.loads(text)}
    assert set(rows) == {
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-agx-orin",
        "jetson-xavier-nx",
        "raspberry-pi-5",
        "x86-avx2",
        "x86-avx512-vnni",
    }
    xavier = rows["jetson-xavier-nx"]
    assert xavier["targets"] == ["cuda", "cpu"]
    assert xavier["notes"] == ["no tensorrt: JetPack 5.1 ships TensorRT 8.5, edgec needs 10+"]
    assert "ships TensorRT 8.5" in xavier["refusals"]["tensorrt"]
    assert rows["jetson-agx-orin"]["notes"] == ["also called jetson-orin-agx"]
    assert (rows["raspberry-pi-5"]["precision"], rows["raspberry-pi-5"]["threads"]) == ("int8", 4)
    code, text = run_cli("devices")
    assert code == 0 and "x86-avx512-vnni" in text and "no tensorrt" in text


def test_profile_defaults_sit_under_config_files_and_flags() -> None:
    pi = device_defaults("raspberry-pi-5")
    assert pi.values == {
        "target": "cpu",
        "precision": "int8",
        "threads": 4,
        "max_size_mb": 536.0,
        "max_memory_mb": 2147.0,
    }
    assert pi.unjudged == ()  # peak memory is measured now
    base, _ = under_device({"precision": "fp32", "threads": 2}, {"device": "raspberry-pi-5"})
    assert (base["precision"], base["threads"], base["target"]) == ("fp32", 2, "cpu")
    # a config file may name the device too
    base, found = under_device({"device": "x86-avx2"}, {})
    assert found is not None and base["precision"] == "int8" and "threads" not in base
    # the profile's precision belongs to its own target
    base, _ = under_device({}, {"device": "jetson-orin-nano", "target": "cpu"})
    assert base["target"] == "tensorrt" and "precision" not in base and base["threads"] == 6
    assert under_device({"precision": "fp16"}, {}) == ({"precision": "fp16"}, None)
    with pytest.raises(UsageError, match="unknown device 'pi-4'"):
        device_defaults("pi-4")


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_compile_with_the_pi_profile_and_flags_over_it(
    small_cnn_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pi"
    calib = ("--calib", "random", "--calib-samples", "8")
    code, text = run_cli(
        "compile",
        str(small_cnn_onnx),
        "--device",
        "raspberry-pi-5",
        "--out",
        str(out),
        *calib,
        *QUICK,
    )
    assert code == 0, text
    report = _report(out)
    assert 0 < report["memory"]["peak_rss_mb"] < 2147
    assert (report["target"], report["precision"], report["latency_ms"]["threads"]) == (
        "cpu",
        "int8",
        4,
    )
    assert [(g["name"], g["limit"]) for g in report["gates"]] == [
        ("max_size_mb", 536.0),
        ("max_memory_mb", 2147.0),
    ]
    out = tmp_path / "over"
    code, text = run_cli(
        "compile",
        str(small_cnn_onnx),
        "--device",
        "raspberry-pi-5",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--max-size-mb",
        "0.5",
        "--out",
        str(out),
        *QUICK,
    )
    assert code == 0, text
    report = _report(out)
    assert (report["precision"], report["latency_ms"]["threads"]) == ("fp32", 1)
    assert [(g["name"], g["limit"]) for g in report["gates"]] == [
        ("max_size_mb", 0.5),
        ("max_memory_mb", 2147.0),
    ]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--device", "jetson-xavier-nx", "--target", "tensorrt"], 2, "ships TensorRT 8.5"),
        (["--device", "raspberry-pi-5", "--precision", "fp16"], 2, "no faster than fp32"),
        (["--device", "raspberry-pi-5", "--target", "cuda"], 2, "no CUDA GPU"),
        (["--device", "pi-4"], 2, "unknown device 'pi-4'"),
        (["--package"], 2, "give --device PROFILE"),
    ],
)
def test_device_refusals_exit_before_any_work(
    small_cnn_onnx: Path, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    out = tmp_path / "out"
    got, text = run_cli("compile", str(small_cnn_onnx), *args, "--out", str(out), *QUICK)
    lines = text.strip().splitlines()
    assert got == code and len(lines) == 1 and says in lines[0], text
    assert not list(tmp_path.iterdir())


def test_compile_package_writes_the_bundle(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = run_cli(
        "compile",
        str(small_cnn_onnx),
        "--device",
        "x86-avx512-vnni",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--package",
        "--out",
        str(out),
        *QUICK,
    )
    assert code == 0, text
    bundle = out / "bundle-x86-avx512-vnni"
    assert f"bundle: {bundle}" in text
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["device"]["name"], manifest["target"], manifest["precision"]) == (
        "x86-avx512-vnni",
        "cpu",
        "fp32",
    )
    assert manifest["files"]["small_cnn.fp32.onnx"]["sha256"] == _report(out)["artifact"]["sha256"]


def test_a_gate_failure_packages_nothing(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = run_cli(
        "compile",
        str(small_cnn_onnx),
        "--device",
        "x86-avx2",
        "--precision",
        "fp32",
        "--max-size-mb",
        "0.0001",
        "--package",
        "--out",
        str(out),
        *QUICK,
    )
    assert code == 3, text
    assert (out / "report.json").is_file() and not list(out.glob("bundle-*"))


def test_int8_weights_follow_the_board_not_the_compiling_machine(tmp_path: Path) -> None:
    """x86-avx2 (no VNNI: AVX2's 16-bit int8 dot products saturate) gets 7-bit weights;
    x86-avx512-vnni keeps all 8 bits; the same flags give the same artifact anywhere."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tests.compiler.test_outputs import two_output_model

    src = two_output_model(tmp_path / "two.onnx")
    widest = {}
    for device in ("x86-avx2", "x86-avx512-vnni"):
        out = tmp_path / device
        code, text = run_cli(
            "compile", str(src), "--device", device, "--calib", "random", "--out", str(out),
            "--report", "json", "--threads", "1",
        )  # fmt: skip
        assert code == 0, text
        report = json.loads((out / "report.json").read_text())
        weights = [
            numpy_helper.to_array(t)
            for t in onnx.load(report["artifact"]["path"]).graph.initializer
            if t.data_type == onnx.TensorProto.INT8
        ]
        widest[device] = max(int(np.abs(w).max()) for w in weights)
        assert ("7-bit" in report["quantization"]["spec"]) == (device == "x86-avx2")
    assert widest == {"x86-avx2": 63, "x86-avx512-vnni": 127}


@pytest.mark.parametrize(("device", "widest"), [("x86-avx2", 63), ("x86-avx512-vnni", 127)])
def test_dynamic_int8_weights_follow_the_board(tmp_path: Path, device: str, widest: int) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from bench.foreign import bert_bytes

    src = tmp_path / "bert.onnx"
    src.write_bytes(bert_bytes())
    out = tmp_path / device
    code, text = run_cli(
        "compile", str(src), "--device", device, "--quant-mode", "dynamic", "--calib", "random",
        "--calib-samples", "8", "--eval-samples", "4", "--dim", "sequence=8", "--out", str(out),
        "--report", "json", "--threads", "1", "--max-memory-mb", "100000",
    )  # fmt: skip
    assert code == 0, text
    report = _report(out)
    assert report["quantization"]["reduce_range"] is (device == "x86-avx2")
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(report["artifact"]["path"]).graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2 and t.dims[0] == 128
    ]
    assert weights and max(int(np.abs(w).max()) for w in weights) == widest
