"""Handwritten digits (scikit-learn's 8x8 `load_digits`): a CNN and a GRU, trained here.

These are the zoo's models with real labels: small enough to train in seconds on
one CPU core, so a compiled model's accuracy is measured against ground truth,
not only against its FP32 original. The CNN carries BatchNorm and Dropout on
purpose, because the compiler folds and removes them; the GRU gives the
recurrent path (ONNX `GRU`) something real to chew on.

The split is fixed and stratified: 30% of each class is held out as the test
set; calibration samples come from the training side, so calibration never
sees a test image. Training is deterministic (seeded, one thread, deterministic
kernels) and its result is cached on disk keyed by a hash of the recipe.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models._cache import deterministic_torch, load_or_create
from models.spec import InputSpec, ModelSpec

log = logging.getLogger(__name__)

NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class DigitsSplit:
    """Images scaled to [0, 1] as (N, 8, 8) float32, labels int64; read-only arrays."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_index: np.ndarray  # rows of load_digits(), for provenance and disjointness checks
    test_index: np.ndarray


@functools.cache
def digits_split() -> DigitsSplit:
    """The fixed stratified split; the same on every call and every machine."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * TEST_FRACTION))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    # Interleave classes so any prefix (calibration_data(n)) is class-balanced-ish.
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    arrays = [x[train], y[train], x[test], y[test], train, test]
    for a in arrays:
        a.setflags(write=False)
    return DigitsSplit(*arrays)


def _split_fingerprint() -> str:
    s = digits_split()
    h = hashlib.sha256()
    for a in (s.train_index, s.test_index, s.train_x, s.train_y):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _take(a: np.ndarray, n: int, what: str) -> np.ndarray:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of samples must be a non-negative integer, got {n!r}")
    if n > len(a):
        raise ValueError(f"digits has only {len(a)} {what} samples; ask for at most {len(a)}")
    return np.array(a[:n])  # a writable copy


# ---------------------------------------------------------------------------
# Models


class DigitsCNN(nn.Module):
    """Three Conv+BN+ReLU blocks, two max-pools, Dropout, Linear: (B, 1, 8, 8) → (B, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # with bias: BN folding must add to it
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 2 * 2, NUM_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsGRU(nn.Module):
    """A GRU over the 8 rows (8 pixels each), Linear on the last step: (B, 8, 8) → (B, 10)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size=8, hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


# ---------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainRecipe:
    """Everything besides the architecture and the data that fixes the trained weights."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    shift: int = 0  # random translation of training images by up to this many pixels


CNN_RECIPE = TrainRecipe(seed=0, epochs=30, batch_size=32, lr=3e-3, shift=1)
GRU_RECIPE = TrainRecipe(seed=0, epochs=40, batch_size=32, lr=5e-3, shift=0)


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each (.., 8, 8) image by up to ±max_shift pixels, zero-filled."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    pad = F.pad(x.reshape(n, 1, 8, 8), (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    out = torch.stack([pad[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8] for i in range(n)])
    return out.reshape(x.shape)


#: A training loss: (model output, target batch) → scalar.
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_model(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    recipe: TrainRecipe,
    loss_fn: Loss = F.cross_entropy,
) -> dict[str, torch.Tensor]:
    """Adam with a one-cycle (cosine) schedule; deterministic for a given recipe and torch build.

    `model` must have been constructed inside the same `deterministic_torch`
    block for its initialization to be reproducible (see `train_cached`).
    `y` is what `loss_fn` compares the output with: labels, or images for an
    autoencoder (then `recipe.shift` must be 0: only inputs are shifted).
    """
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    g = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = (len(xt) + recipe.batch_size - 1) // recipe.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(xt), generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            loss = loss_fn(model(_shift(xt[idx], recipe.shift, g)), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model.state_dict()


def train_cached(
    name: str,
    cls: type[nn.Module],
    input_shape: tuple[int, ...],
    recipe: TrainRecipe,
    loss_fn: Loss = F.cross_entropy,
    reconstruct: bool = False,
) -> nn.Module:
    """`cls()` trained on the training side (cached by recipe hash), in eval mode.

    `reconstruct=True` trains it to output its input (an autoencoder) instead of labels.
    """
    split = digits_split()
    key = {
        "arch": inspect.getsource(cls),
        "trainer": inspect.getsource(train_model) + inspect.getsource(_shift),
        "recipe": asdict(recipe),
        "split": _split_fingerprint(),
        "torch": torch.__version__.split("+")[0],
        "version": 1,
        "loss": loss_fn.__name__,
        "reconstruct": reconstruct,
    }

    def create() -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        with deterministic_torch(recipe.seed):
            model = cls()
            x = split.train_x.reshape(-1, *input_shape[1:])
            state = train_model(model, x, x if reconstruct else split.train_y, recipe, loss_fn)
        log.info("trained %s in %.1f s", name, time.perf_counter() - t0)
        return state

    model = cls()
    model.load_state_dict(load_or_create(name, key, create), strict=True)
    return model.eval()


CNN_SHAPE: tuple[int, ...] = (1, 1, 8, 8)
GRU_SHAPE: tuple[int, ...] = (1, 8, 8)


def build_digits_cnn() -> DigitsCNN:
    """The trained digits CNN (cached after the first build), in eval mode."""
    model = train_cached("digits_cnn", DigitsCNN, CNN_SHAPE, CNN_RECIPE)
    assert isinstance(model, DigitsCNN)
    return model


def build_digits_gru() -> DigitsGRU:
    """The trained digits GRU (cached after the first build), in eval mode."""
    model = train_cached("digits_gru", DigitsGRU, GRU_SHAPE, GRU_RECIPE)
    assert isinstance(model, DigitsGRU)
    return model


# ---------------------------------------------------------------------------
# Sample data


def calibration_data(n: int, shape: tuple[int, ...] = CNN_SHAPE) -> np.ndarray:
    """The first n training-side images, shaped (n, *shape[1:]); never a test image."""
    return _take(digits_split().train_x, n, "training-side").reshape(-1, *shape[1:])


def evaluation_data(n: int, shape: tuple[int, ...] = CNN_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """The first n held-out test images and their labels (int64)."""
    s = digits_split()
    x = _take(s.test_x, n, "test").reshape(-1, *shape[1:])
    return x, np.array(s.test_y[:n])


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a torch model on (x, y), computed in torch."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(np.array(x, dtype=np.float32))).argmax(-1).numpy()
    return float((pred == y).mean())


# ---------------------------------------------------------------------------
# Registry entries


def classifier_spec(
    name: str,
    description: str,
    shape: tuple[int, ...],
    build: Callable[[], nn.Module],
    recipe: TrainRecipe,
    tags: tuple[str, ...],
) -> ModelSpec:
    """A digits classifier's zoo entry: train-side calibration, the whole test split with labels."""
    n_test = len(digits_split().test_y)  # the whole held-out set: 539 images, milliseconds
    return ModelSpec(
        name=name,
        task="image-classification",
        description=description,
        inputs=(InputSpec("input", shape),),
        output_names=("logits",),
        weights_source=f"trained here on sklearn load_digits (train split, seed {recipe.seed})",
        build=build,
        calibration_data=lambda n: calibration_data(n, shape),
        evaluation_data=lambda n: evaluation_data(n, shape),
        default_calib_samples=256,
        # fine-tuning reads 1,024 of the 1,258 training images (256 KB for the CNN): 50%
        # channel pruning of digits_cnn recovered to 0.9759 with 256, 0.9889 with 1,024
        default_finetune_samples=1024,
        default_eval_samples=n_test,
        tags=("digits", "labels", *tags),
    )


def digits_cnn() -> ModelSpec:
    return classifier_spec(
        "digits_cnn",
        "small CNN (Conv+BN+ReLU x3, Dropout, Linear) on 8x8 sklearn digits",
        CNN_SHAPE,
        build_digits_cnn,
        CNN_RECIPE,
        ("cnn", "batchnorm", "dropout"),
    )


def digits_gru() -> ModelSpec:
    return classifier_spec(
        "digits_gru",
        "GRU over the 8 rows of 8x8 sklearn digits, Linear head",
        GRU_SHAPE,
        build_digits_gru,
        GRU_RECIPE,
        ("rnn", "gru"),
    )
