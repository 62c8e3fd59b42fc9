"""Calibration data sources and their validation (PassInputError → exit code 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from passes.errors import PassInputError, PassOptionError
from passes.quantize.data import CalibrationStream, InputSignature

SIG = [InputSignature("x", (None, 3, 8, 8), np.dtype(np.float32))]


def _samples(stream: CalibrationStream) -> int:
    return sum(b["x"].shape[0] for b in stream)


def test_array_batches_and_limit() -> None:
    x = np.zeros((20, 3, 8, 8), np.float32)
    stream = CalibrationStream(x, SIG, samples=13, batch_size=4)
    sizes = [b["x"].shape[0] for b in stream]
    assert sizes == [4, 4, 4, 1] and stream.total == 13
    assert _samples(stream) == 13  # re-iterable
    assert sum(b["x"].shape[0] for b in stream.take(6)) == 6


def test_float64_is_cast_and_generators_are_read_once() -> None:
    gen = (np.ones((5, 3, 8, 8), np.float64) for _ in range(3))
    stream = CalibrationStream(gen, SIG, batch_size=4)
    batches = list(stream)
    assert all(b["x"].dtype == np.float32 for b in batches)
    assert stream.total == 15 and _samples(stream) == 15


def test_npy_is_memory_mapped_and_npz_by_name(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    stream = CalibrationStream(tmp_path / "c.npy", SIG, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in stream]), x)
    np.savez(tmp_path / "c.npz", x=x, labels=np.zeros(10))
    assert _samples(CalibrationStream(tmp_path / "c.npz", SIG)) == 10


def test_folder_of_images_with_preprocessing(tmp_path: Path) -> None:
    from skimage import io

    rng = np.random.default_rng(0)
    for i in range(3):
        io.imsave(
            tmp_path / f"{i}.png",
            rng.integers(0, 255, (12, 10, 3), dtype=np.uint8),
            check_contrast=False,
        )
    (tmp_path / "notes.txt").write_text("not an image")

    def preprocess(img: np.ndarray) -> np.ndarray:
        return np.resize(img.astype(np.float32) / 255, (8, 8, 3)).transpose(2, 0, 1)

    stream = CalibrationStream(tmp_path, SIG, batch_size=2, preprocess=preprocess)
    assert stream.total == 3 and _samples(stream) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            np.zeros((4, 3, 9, 9), np.float32),
            r"has shape \(N, 3, 9, 9\); the model expects \(N, 3, 8, 8\)",
        ),
        (np.zeros((4, 8, 8), np.float32), "has shape"),
        (np.zeros((4, 3, 8, 8), np.int32), "is int32; the model expects float32"),
        (np.full((4, 3, 8, 8), np.nan, np.float32), "contains NaN or Inf"),
        (np.full((4, 3, 8, 8), np.inf, np.float32), "contains NaN or Inf"),
        (np.zeros((0, 3, 8, 8), np.float32), "empty"),
    ],
)
def test_bad_arrays_are_invalid_input(data: np.ndarray, message: str) -> None:
    with pytest.raises(PassInputError, match=message) as info:
        list(CalibrationStream(data, SIG))
    assert "\n" not in str(info.value)


def test_nan_in_a_later_batch_names_it() -> None:
    x = np.zeros((10, 3, 8, 8), np.float32)
    x[9, 0, 0, 0] = np.nan
    with pytest.raises(PassInputError, match="from sample 8"):
        list(CalibrationStream(x, SIG, batch_size=4))


def test_bad_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(PassInputError, match="does not exist"):
        CalibrationStream(tmp_path / "missing.npy", SIG)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(PassInputError, match="not a readable .npy"):
        CalibrationStream(tmp_path / "bad.npy", SIG)
    np.savez(tmp_path / "other.npz", a=np.zeros((2, 3, 8, 8)), b=np.zeros((2, 3, 8, 8)))
    with pytest.raises(PassInputError, match="no array named 'x'"):
        CalibrationStream(tmp_path / "other.npz", SIG)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PassInputError, match="has no images"):
        CalibrationStream(empty, SIG, preprocess=lambda im: im)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"garbage")
    with pytest.raises(PassOptionError, match="needs the model's preprocessing"):
        CalibrationStream(tmp_path / "imgs", SIG)
    with pytest.raises(PassInputError, match="cannot read calibration image a.png"):
        list(CalibrationStream(tmp_path / "imgs", SIG, preprocess=lambda im: im))
    with pytest.raises(PassInputError, match="empty"):
        list(CalibrationStream(iter([]), SIG))
