"""The LSTM, ViT and autoencoder digits models: data, held-out quality, export, the CLI paths.

Measured on this machine (torch 2.13 CPU, one thread, fresh cache), recorded so
the floors below have visible margins:

| model | train | held-out | INT8 vs FP32 | QAT (1 epoch) | channel pruning |
|---|---|---|---|---|---|
| digits_lstm | 9 s | top-1 0.978 | agreement 1.000, cos 0.99957, top-1 0.978 | agreement 1.000, top-1 0.978 | refused: see below |
| digits_vit | 30 s | top-1 0.928 | agreement 0.972, cos 0.9938, top-1 0.913 | xfail: see below | refused: xfail below |
| digits_autoencoder | 17 s | MSE 0.0024 (mean image: 0.0735) | cos 0.99998, 43.7 dB | cos 0.99998, 43.6 dB | 0.5: cos 0.967, 6.6 dB |

Where a path is not tested, and why:

- LSTM channel pruning: its only prunable layer is the head Gemm, whose output
  is the graph output; the LSTM's gates are one fused op with no channel axis
  the pass could slice. The pass refuses with that reason (asserted below).
- LSTM INT8/QAT quantize only the head Gemm: the CPU spec leaves the LSTM op
  float (the artifact is 0.99x the FP32 size), so the floors are about agreement.
- Autoencoder pruning runs at 0.5, not 0.25: the CPU target rounds kept
  channels up to multiples of 16, so 0.25 of a 16- or 32-channel layer keeps
  them all (a no-op); at 0.5 the 32-channel enc2 keeps 16.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from compiler.cli import main
from compiler.export import export_torch
from models import digits, digits_families
from models.registry import get_model, model_names

NAMES = ["digits_lstm", "digits_vit", "digits_autoencoder"]
SHAPES = {"digits_lstm": (1, 8, 8), "digits_vit": (1, 1, 8, 8), "digits_autoencoder": (1, 1, 8, 8)}


def _compile(name: str, out: Path, *flags: str) -> tuple[int, str, dict | None]:
    res = CliRunner().invoke(
        main, ["compile", name, *flags, "--threads", "1", "--report", "json", "--out", str(out)]
    )
    path = out / "report.json"
    return res.exit_code, res.output, json.loads(path.read_text()) if path.exists() else None


# --- specs, data and held-out quality ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_spec_and_data(name: str) -> None:
    assert name in model_names()
    spec = get_model(name)
    shape = SHAPES[name]
    assert [(i.name, i.shape) for i in spec.inputs] == [("input", shape)]
    calib = spec.calibration_data(256)
    assert calib.shape == (256, *shape[1:]) and calib.dtype == np.float32
    split = digits.digits_split()
    np.testing.assert_array_equal(calib.reshape(-1, 64), split.train_x[:256].reshape(-1, 64))
    x, y = spec.evaluation_data(spec.default_eval_samples)
    assert x.shape == (539, *shape[1:])
    np.testing.assert_array_equal(x.reshape(-1, 64), split.test_x.reshape(-1, 64))
    if name == "digits_autoencoder":
        assert not spec.class_scores and y is None and spec.output_names == ("reconstruction",)
    else:
        assert spec.class_scores and spec.output_names == ("logits",)
        assert y is not None and y.shape == (539,) and y.dtype == np.int64


@pytest.mark.parametrize(("name", "floor"), [("digits_lstm", 0.95), ("digits_vit", 0.90)])
def test_held_out_accuracy(name: str, floor: float) -> None:
    """Measured: LSTM 0.978, ViT 0.928 top-1 on the 539 held-out images."""
    spec = get_model(name)
    model = spec.build()
    assert not model.training
    x, y = spec.evaluation_data(spec.default_eval_samples)
    assert y is not None and digits.accuracy(model, x, y) >= floor


def test_autoencoder_reconstructs_held_out_digits() -> None:
    """Measured: MSE 0.0024 on the test images; predicting the training mean image gives 0.0735."""
    split = digits.digits_split()
    x = split.test_x.reshape(-1, 1, 8, 8)
    mse = digits_families.reconstruction_mse(digits_families.build_digits_autoencoder(), x)
    mean_image_mse = float(((split.test_x - split.train_x.mean(0)) ** 2).mean())
    assert mse <= 0.004 and mse <= 0.1 * mean_image_mse


# --- what the exported graphs carry -----------------------------------------------------

PATTERNS = {
    "digits_lstm": {"LSTM", "Gemm"},
    "digits_vit": {"Conv", "LayerNormalization", "MatMul", "Softmax", "Erf", "ReduceMean"},
    "digits_autoencoder": {"ConvTranspose", "Resize", "Concat", "Sigmoid"},
}


@pytest.mark.parametrize("name", NAMES)
def test_exports_the_family_patterns_with_dynamic_batch(name: str) -> None:
    """TorchScript exporter at opset 17, as `edgec compile` exports: exported at batch 2, run at 5."""
    spec = get_model(name)
    model = spec.build()
    x = np.asarray(spec.evaluation_data(5)[0])
    proto = export_torch(model, [x[:2]], input_names=["input"], output_names=spec.output_names)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert PATTERNS[name] <= set(ops), ops
    if name == "digits_vit":  # two pre-norm layers + the final norm; one GELU per layer
        assert ops["LayerNormalization"] == 5 and ops["Softmax"] == 2 and ops["Erf"] == 2
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and got.shape[0] == 5
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_is_deterministic(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = get_model(name).build
    states = []
    for i in range(2):
        monkeypatch.setenv("EDGEC_CACHE", str(tmp_path / str(i)))  # an empty cache: train anew
        states.append(build().state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# --- edgec compile: FP32, INT8, QAT, pruning ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_fp32_compile(name: str, tmp_path: Path) -> None:
    code, text, report = _compile(name, tmp_path / "o")
    assert code == 0, text
    assert report is not None and report["precision"] == "fp32" and report["passed"]
    acc = report["accuracy"]
    assert acc["samples"] == 539 and acc["cosine"] >= 0.99999
    if name == "digits_autoencoder":
        assert acc["top1_agreement"] is None and acc["top1_accuracy"] is None
    else:
        assert acc["top1_agreement"] == 1.0
        assert acc["top1_accuracy"] == acc["baseline_top1_accuracy"] >= 0.9


@pytest.mark.parametrize(
    ("name", "min_agreement", "max_drop"),
    [("digits_lstm", 0.99, 0.005), ("digits_vit", 0.95, 0.03)],  # measured 1.000/0; 0.972/0.015
)
def test_int8_classifiers(name: str, min_agreement: float, max_drop: float, tmp_path: Path) -> None:
    code, text, report = _compile(name, tmp_path / "o", "--precision", "int8")
    assert code == 0, text
    assert report is not None
    acc = report["accuracy"]
    assert acc["top1_agreement"] >= min_agreement
    assert acc["top1_accuracy"] >= acc["baseline_top1_accuracy"] - max_drop
    counts = report["quantization"]["qdq_counts"]
    assert counts["Gemm"]["weight"] >= 1
    if name == "digits_vit":  # the transformer spec: weighted MatMuls int8, attention float
        assert counts["MatMul"]["weight"] == counts["MatMul"]["nodes"] >= 4
        assert report["artifact"]["size_bytes"] < 0.7 * report["baseline"]["size_bytes"]


def _artifact_mse(report: dict) -> float:
    """The artifact's reconstruction MSE on the held-out images, run in onnxruntime."""
    x = digits.digits_split().test_x.reshape(-1, 1, 8, 8)
    sess = ort.InferenceSession(report["artifact"]["path"], providers=["CPUExecutionProvider"])
    return float(((sess.run(None, {"input": x})[0] - x) ** 2).mean())


def test_int8_autoencoder(tmp_path: Path) -> None:
    """Measured: cosine 0.99998, SQNR 43.7 dB against FP32; reconstruction MSE stays 0.0024."""
    code, text, report = _compile("digits_autoencoder", tmp_path / "o", "--precision", "int8")
    assert code == 0, text
    assert report is not None
    acc = report["accuracy"]
    assert acc["cosine"] >= 0.9995 and acc["sqnr_db"] >= 35
    counts = report["quantization"]["qdq_counts"]
    assert counts["ConvTranspose"]["weight"] == 1
    assert counts["Conv"]["weight"] >= 4
    assert _artifact_mse(report) <= 0.004


@pytest.mark.parametrize("name", ["digits_lstm", "digits_autoencoder"])
def test_qat_one_epoch(name: str, tmp_path: Path) -> None:
    """Measured: LSTM agreement 1.000 (top-1 0.978); autoencoder cosine 0.99998, 43.6 dB."""
    flags = ("--precision", "int8", "--qat", "--epochs", "1")
    code, text, report = _compile(name, tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None and report["quantization"]["method"].startswith("qat")
    acc = report["accuracy"]
    if name == "digits_lstm":
        assert acc["top1_agreement"] >= 0.99
        assert acc["top1_accuracy"] >= acc["baseline_top1_accuracy"] - 0.005
    else:
        assert acc["cosine"] >= 0.9995 and acc["sqnr_db"] >= 35


@pytest.mark.xfail(
    strict=True,
    reason="QAT maps each quantized ONNX node to a torch module; nn.MultiheadAttention's "
    "in-projection is F.linear inside F.multi_head_attention_forward (an ONNX MatMul with "
    "a weight, quantized by the transformer spec) with no module of its own: exit 2, "
    "'cannot place the quantizer ... MatMul has no torch counterpart'",
)
def test_qat_vit(tmp_path: Path) -> None:
    flags = ("--precision", "int8", "--qat", "--epochs", "1")
    code, text, report = _compile("digits_vit", tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None and report["accuracy"]["top1_agreement"] >= 0.95


def test_lstm_channel_pruning_is_refused_with_the_reason(tmp_path: Path) -> None:
    flags = ("--prune", "0.25", "--prune-mode", "channel")
    code, text, report = _compile("digits_lstm", tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None
    p = report["pruning"]
    assert p["groups_pruned"] == 0 and p["channels_after"] == p["channels_before"]
    assert [g["reason"] for g in p["groups"]] == ["'logits' is a graph output"]
    assert report["accuracy"]["top1_agreement"] == 1.0


@pytest.mark.xfail(
    strict=True,
    reason="channel pruning follows channels on axis 1; a transformer's (B, T, C) tokens carry "
    "them on the last axis, and the attention/patch Reshapes refuse their groups: no group of "
    "the ViT (not even the MLP's hidden 64) is pruned",
)
def test_vit_channel_pruning(tmp_path: Path) -> None:
    flags = ("--prune", "0.25", "--prune-mode", "channel")
    code, text, report = _compile("digits_vit", tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None
    assert report["pruning"]["channels_after"] < report["pruning"]["channels_before"]


def test_autoencoder_channel_pruning(tmp_path: Path) -> None:
    """Measured at 0.5 (no fine-tuning): enc2 32 → 16 channels, cosine 0.967, 0.68x the size."""
    flags = ("--prune", "0.5", "--prune-mode", "channel")
    code, text, report = _compile("digits_autoencoder", tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None
    groups = {g["sources"][0]: g for g in report["pruning"]["groups"]}
    assert groups["/enc2/enc2.0/Conv"]["channels_after"] == 16  # read by a Conv and the Concat
    assert report["accuracy"]["cosine"] >= 0.95
    assert report["artifact"]["size_bytes"] < 0.8 * report["baseline"]["size_bytes"]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="--finetune-epochs scores a non-classifier by argmax over its last axis "
    "(passes/prune/finetune.py _top1): the autoencoder's 'top1_agreement_with_unpruned' "
    "is 8.0 (summed over the 8 image rows), not a fraction; cosine would be the metric",
)
def test_autoencoder_pruning_finetune_reports_a_fraction(tmp_path: Path) -> None:
    """Measured with 5 epochs: cosine 0.967 → 0.994 (19.2 dB); the report's metric reads 8.0."""
    flags = ("--prune", "0.5", "--prune-mode", "channel", "--finetune-epochs", "1")
    code, text, report = _compile("digits_autoencoder", tmp_path / "o", *flags)
    assert code == 0, text
    assert report is not None
    ft = report["pruning"]["finetune"]
    assert all(0.0 <= ft[k] <= 1.0 for k in ("accuracy_unpruned", "accuracy_pruned"))
