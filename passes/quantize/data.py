"""Calibration data: many kinds of source, one validated stream of batches.

`CalibrationStream(source, inputs, samples=..., batch_size=...)` yields feeds
``{input name: (b, ...) array}`` of at most `batch_size` samples and `samples` in
all. Accepted sources:

- a numpy array (single-input models) or a mapping ``{input name: array}``;
- an iterable of such batches (a generator is read once; its batches are kept
  in memory, up to `samples`, so later passes can see them again);
- a path to a ``.npy`` file (memory-mapped: only the current batch is in memory)
  or a ``.npz`` file (one array per input name; ``input`` or a lone array also
  serves a single-input model);
- a folder of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), read one at a
  time with scikit-image and turned into a model input by `preprocess` (a
  callable from an RGB uint8 (H, W, 3) image to the input of one sample), which
  the caller must supply — the model's own preprocessing, e.g. the zoo's.

Every batch is checked before it reaches the model; a problem raises
`passes.errors.PassInputError` (the compile stage turns it into exit code 4)
with a one-line message: a shape that does not match the model's fixed
dimensions, an integer dtype for a float input, NaN or Inf, an empty array,
file or folder, an unreadable image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from passes.errors import PassInputError, PassOptionError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

CalibrationSource = (
    np.ndarray
    | Mapping[str, np.ndarray]
    | Iterable[np.ndarray | Mapping[str, np.ndarray]]
    | str
    | os.PathLike
)


@dataclass(frozen=True)
class InputSignature:
    """A model input: name, dims (None where dynamic), numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        return (
            "("
            + ", ".join(
                "N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(self.shape)
            )
            + ")"
        )


def model_inputs(model: ir.Model) -> list[InputSignature]:
    """The real inputs of `model` (initializers excluded)."""
    sigs = []
    for v in model.graph.inputs:
        if v.is_initializer():
            continue
        dims: tuple[int | None, ...] = ()
        if v.shape is not None:
            dims = tuple(d if isinstance(d, int) else None for d in v.shape)
        dtype = np.dtype(v.dtype.numpy()) if v.dtype is not None else np.dtype(np.float32)
        sigs.append(InputSignature(v.name or "", dims, dtype))
    return sigs


class CalibrationStream:
    """Validated batches from any `CalibrationSource` (see module docstring). Re-iterable."""

    def __init__(
        self,
        source: CalibrationSource,
        inputs: list[InputSignature],
        *,
        samples: int | None = None,
        batch_size: int = 16,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not inputs:
            raise PassInputError("the model has no inputs to calibrate")
        if samples is not None and samples < 1:
            raise PassOptionError(
                f"the number of calibration samples must be at least 1, got {samples}"
            )
        if batch_size < 1:
            raise PassOptionError(
                f"the calibration batch size must be at least 1, got {batch_size}"
            )
        self.inputs = inputs
        self.samples = samples
        self.batch_size = batch_size
        self._source = source
        self._preprocess = preprocess
        self._cache: list[dict[str, np.ndarray]] | None = None
        self._make: Callable[[], Iterator[dict[str, np.ndarray]]]
        self.total: int | None = None
        self.description = type(source).__name__
        self._setup()

    # -- sources ------------------------------------------------------------------

    def _setup(self) -> None:
        src = self._source
        if isinstance(src, str | os.PathLike):
            path = Path(src)
            self.description = str(path)
            if path.is_dir():
                self._setup_folder(path)
            elif not path.exists():
                raise PassInputError(f"calibration data {path} does not exist")
            elif path.suffix == ".npy":
                arr = self._load_npy(path)
                self._setup_arrays(
                    {self.inputs[0].name: arr} if len(self.inputs) == 1 else self._need_npz(path)
                )
            elif path.suffix == ".npz":
                self._setup_arrays(self._load_npz(path))
            else:
                raise PassInputError(
                    f"calibration data {path} is not a folder of images, a .npy or a .npz file"
                )
        elif isinstance(src, np.ndarray):
            self.description = f"array {tuple(src.shape)}"
            if len(self.inputs) != 1:
                raise PassInputError(
                    "a single array only calibrates single-input models; pass {input name: array}"
                )
            self._setup_arrays({self.inputs[0].name: src})
        elif isinstance(src, Mapping):
            self.description = "arrays"
            self._setup_arrays(dict(src))
        elif isinstance(src, Iterable):
            self.description = "batches"
            it = iter(src)
            self._make = lambda: self._from_iterator(it)
        else:
            raise PassInputError(
                f"cannot calibrate from a {type(src).__name__}; give arrays, batches, a folder or a .npy/.npz file"
            )

    def _need_npz(self, path: Path) -> dict[str, np.ndarray]:
        raise PassInputError(
            f"{path}: a .npy file feeds single-input models; use a .npz keyed by input name"
        )

    def _load_npy(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise PassInputError(
                f"{path} is not a readable .npy file ({type(e).__name__})"
            ) from None

    def _load_npz(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                files = list(z.files)
                out = {}
                for sig in self.inputs:
                    key = sig.name if sig.name in files else None
                    if key is None and len(self.inputs) == 1:
                        rest = [f for f in files if f != "labels"]
                        key = "input" if "input" in files else (rest[0] if len(rest) == 1 else None)
                    if key is None:
                        raise PassInputError(
                            f"{path} has no array named {sig.name!r} (has: {', '.join(sorted(files)) or 'nothing'})"
                        )
                    out[sig.name] = z[key]
                return out
        except PassInputError:
            raise
        except Exception as e:
            raise PassInputError(
                f"{path} is not a readable .npz file ({type(e).__name__})"
            ) from None

    def _setup_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for sig in self.inputs:
            if sig.name not in arrays:
                raise PassInputError(f"calibration data has no array for input {sig.name!r}")
        arrays = {s.name: _as_array(arrays[s.name], s.name) for s in self.inputs}
        counts = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if len(counts) > 1:
            raise PassInputError(
                f"calibration inputs have different sample counts {sorted(counts)}"
            )
        n = counts.pop()
        if n == 0:
            raise PassInputError("calibration data is empty (0 samples)")
        n = min(n, self.samples) if self.samples else n
        self.total = n

        def make() -> Iterator[dict[str, np.ndarray]]:
            for start in range(0, n, self.batch_size):
                stop = min(n, start + self.batch_size)
                yield self._check({k: np.asarray(a[start:stop]) for k, a in arrays.items()}, start)

        self._make = make

    def _setup_folder(self, path: Path) -> None:
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise PassInputError(
                f"calibration folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        if len(self.inputs) != 1:
            raise PassInputError("a folder of images only calibrates single-input models")
        if self._preprocess is None:
            raise PassOptionError(
                f"calibrating from the image folder {path} needs the model's preprocessing; "
                "use a zoo model, or give --calib as a .npy/.npz of preprocessed inputs"
            )
        if self.samples:
            files = files[: self.samples]
        self.total = len(files)
        preprocess = self._preprocess
        name = self.inputs[0].name

        def make() -> Iterator[dict[str, np.ndarray]]:
            from skimage import io

            for start in range(0, len(files), self.batch_size):
                batch = []
                for f in files[start : start + self.batch_size]:
                    try:
                        img = np.asarray(io.imread(f))
                        sample = np.asarray(preprocess(img))
                    except Exception as e:  # noqa: BLE001 - any decoder error is the file's fault
                        raise PassInputError(
                            f"cannot read calibration image {f.name}: {type(e).__name__}: {e}"
                        ) from None
                    batch.append(sample)
                yield self._check({name: np.stack(batch)}, start)

        self._make = make

    def _from_iterator(self, it: Iterator[object]) -> Iterator[dict[str, np.ndarray]]:
        done = 0
        for item in it:
            if isinstance(item, Mapping):
                feeds = {k: _as_array(v, k) for k, v in item.items()}
            elif len(self.inputs) == 1:
                feeds = {self.inputs[0].name: _as_array(item, self.inputs[0].name)}
            else:
                raise PassInputError(
                    "batches for a multi-input model must be {input name: array} mappings"
                )
            missing = [s.name for s in self.inputs if s.name not in feeds]
            if missing:
                raise PassInputError(f"a calibration batch has no array for input {missing[0]!r}")
            feeds = {s.name: feeds[s.name] for s in self.inputs}
            n = next(iter(feeds.values())).shape[0] if next(iter(feeds.values())).ndim else 0
            if self.samples:
                n = min(n, self.samples - done)
                feeds = {k: v[:n] for k, v in feeds.items()}
            for start in range(0, n, self.batch_size):
                yield self._check(
                    {k: v[start : start + self.batch_size] for k, v in feeds.items()}, done + start
                )
            done += n
            if self.samples and done >= self.samples:
                break
        if done == 0:
            raise PassInputError("calibration data is empty (the batches held no samples)")

    # -- checks -------------------------------------------------------------------------

    def _check(self, feeds: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        counts = set()
        for sig in self.inputs:
            arr = feeds[sig.name]
            if arr.ndim != len(sig.shape) or any(
                want is not None and got != want
                for got, want in zip(arr.shape[1:], sig.shape[1:], strict=False)
            ):
                raise PassInputError(
                    f"calibration data for {sig.name!r} has shape (N, {', '.join(map(str, arr.shape[1:]))}); "
                    f"the model expects {sig.describe()}"
                )
            if arr.dtype != sig.dtype:
                if np.issubdtype(sig.dtype, np.floating) and np.issubdtype(arr.dtype, np.floating):
                    arr = feeds[sig.name] = arr.astype(sig.dtype)
                else:
                    raise PassInputError(
                        f"calibration data for {sig.name!r} is {arr.dtype}; the model expects {sig.dtype}"
                    )
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise PassInputError(
                    f"calibration data for {sig.name!r} contains NaN or Inf (in the batch from sample {start})"
                )
            counts.add(arr.shape[0])
        if len(counts) > 1:
            raise PassInputError(
                f"calibration inputs have different sample counts {sorted(counts)}"
            )
        return {k: np.ascontiguousarray(v) for k, v in feeds.items()}

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self._cache is not None:
            yield from self._cache
        elif self.total is not None:
            yield from self._make()
        else:  # a one-shot iterator: read it (up to `samples`) and keep it
            self._cache = list(self._make())
            self.total = sum(next(iter(f.values())).shape[0] for f in self._cache)
            yield from self._cache

    def take(self, n: int) -> Iterator[dict[str, np.ndarray]]:
        """The first `n` samples, in batches."""
        done = 0
        for feeds in self:
            if done >= n:
                return
            b = next(iter(feeds.values())).shape[0]
            if done + b > n:
                feeds = {k: v[: n - done] for k, v in feeds.items()}
            done += min(b, n - done)
            yield feeds


def _as_array(x: object, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:
            raise PassInputError(
                f"calibration data for {name!r} is not an array ({type(e).__name__})"
            ) from None
    if arr.dtype == object:
        raise PassInputError(f"calibration data for {name!r} is not a numeric array")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise PassInputError(f"calibration data for {name!r} is empty (0 samples)")
    return arr
