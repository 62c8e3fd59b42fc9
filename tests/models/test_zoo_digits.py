"""The digits zoo entries: a fixed split, trained accuracy, caching, ONNX export."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models import _cache, digits
from models.registry import get_model, model_names

SHAPES = {"digits_cnn": (1, 1, 8, 8), "digits_gru": (1, 8, 8)}


def _onnx_roundtrip(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Export at batch 2 (opset 17, dynamic batch), run `x` in onnxruntime and in torch."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*GRU")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks inside nn.GRU
        torch.onnx.export(
            model,
            (torch.from_numpy(x[:2]),),
            buf,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return got, want


# --- split and data -------------------------------------------------------------


def test_split_is_fixed_disjoint_and_stratified() -> None:
    s = digits.digits_split()
    assert len(s.train_index) + len(s.test_index) == 1797
    assert not set(s.train_index.tolist()) & set(s.test_index.tolist())
    assert sorted([*s.train_index, *s.test_index]) == list(range(1797))
    counts = np.bincount(s.test_y, minlength=10) / np.bincount(
        np.concatenate([s.train_y, s.test_y])
    )
    assert np.all(np.abs(counts - digits.TEST_FRACTION) < 0.01)
    assert s.train_x.dtype == np.float32 and 0.0 <= s.train_x.min() and s.train_x.max() <= 1.0
    assert not s.train_x.flags.writeable  # cached arrays cannot be mutated by a caller


@pytest.mark.parametrize("name", ["digits_cnn", "digits_gru"])
def test_spec_and_data(name: str) -> None:
    assert name in model_names()
    spec = get_model(name)
    assert [(i.name, i.shape) for i in spec.inputs] == [("input", SHAPES[name])]
    assert spec.output_names == ("logits",)
    calib = spec.calibration_data(256)
    assert calib.shape == (256, *SHAPES[name][1:]) and calib.dtype == np.float32
    x, y = spec.evaluation_data(spec.default_eval_samples)
    assert x.shape == (539, *SHAPES[name][1:]) and y.dtype == np.int64 and y.shape == (539,)
    assert spec.calibration_data(0).shape == (0, *SHAPES[name][1:])
    with pytest.raises(ValueError, match="at most 1258"):
        spec.calibration_data(5000)


def test_calibration_comes_from_the_training_side() -> None:
    s = digits.digits_split()
    calib = digits.calibration_data(len(s.train_y)).reshape(-1, 64)
    np.testing.assert_array_equal(calib, s.train_x.reshape(-1, 64))
    test_rows = {row.tobytes() for row in s.test_x.reshape(-1, 64)}
    assert not any(row.tobytes() in test_rows for row in calib)


# --- trained models ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "floor"), [("digits_cnn", 0.95), ("digits_gru", 0.90)])
def test_held_out_accuracy(name: str, floor: float) -> None:
    spec = get_model(name)
    model = spec.build()
    assert not model.training
    x, y = spec.evaluation_data(spec.default_eval_samples)
    assert digits.accuracy(model, x, y) >= floor


def test_cnn_keeps_batchnorm_and_dropout_for_the_compiler() -> None:
    kinds = {type(m) for m in digits.build_digits_cnn().modules()}
    assert {torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.Conv2d, torch.nn.Linear} <= kinds


@pytest.mark.parametrize("name", ["digits_cnn", "digits_gru"])
def test_exports_to_onnx_with_dynamic_batch(name: str) -> None:
    spec = get_model(name)
    x = spec.evaluation_data(5)[0]  # exported at batch 2, run at batch 5
    got, want = _onnx_roundtrip(spec.build(), x)
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# --- cache ----------------------------------------------------------------------


def test_cache_creates_once_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEC_CACHE", str(tmp_path))
    calls = []

    def create() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"w": torch.arange(4.0)}

    a = _cache.load_or_create("toy", {"v": 1}, create)
    b = _cache.load_or_create("toy", {"v": 1}, create)
    assert len(calls) == 1 and torch.equal(a["w"], b["w"])
    _cache.load_or_create("toy", {"v": 2}, create)  # another recipe, another file
    assert len(calls) == 2
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert len(files) == 2 and all(f.startswith("toy-") and f.endswith(".pt") for f in files)


def test_cache_replaces_unreadable_or_unsafe_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEC_CACHE", str(tmp_path))
    path = _cache.cache_dir() / f"toy-{_cache.recipe_key({'v': 1})}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert torch.equal(
        _cache.load_or_create("toy", {"v": 1}, lambda: {"w": torch.ones(2)})["w"], torch.ones(2)
    )
    torch.save({"w": torch.zeros(2), "evil": os.getcwd}, path)  # not loadable with weights_only
    assert torch.equal(
        _cache.load_or_create("toy", {"v": 1}, lambda: {"w": torch.ones(2)})["w"], torch.ones(2)
    )
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_deterministic_torch_restores_global_state() -> None:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    with _cache.deterministic_torch(123):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        torch.rand(3)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_cnn", "digits_gru"])
def test_training_is_deterministic(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = get_model(name).build
    states = []
    for i in range(2):
        monkeypatch.setenv("EDGEC_CACHE", str(tmp_path / str(i)))  # an empty cache: train anew
        states.append(build().state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
