"""INT8 determinism: same inputs → byte-identical artifact; calibration ignores file listing order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from skimage import data as skdata
from skimage import io as skio

from compiler.cli import main
from passes.quantize.data import CalibrationStream, InputSignature


def test_int8_artifact_is_byte_identical_across_runs(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        res = CliRunner().invoke(
            main, ["compile", "digits_cnn", "--precision", "int8", "--threads", "1",
                   "--report", "json", "--out", str(out)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        report = json.loads((out / "report.json").read_text())
        artifact = Path(report["artifact"]["path"])
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert digest == report["artifact"]["sha256"]
        digests.append(digest)
    assert digests[0] == digests[1]


def _stream_from(folder: Path) -> list[np.ndarray]:
    sig = [InputSignature("input", (None, 3, 16, 16), np.dtype(np.float32))]

    def preprocess(rgb: np.ndarray) -> np.ndarray:
        return (rgb[:16, :16].astype(np.float32) / 255.0).transpose(2, 0, 1)

    stream = CalibrationStream(str(folder), sig, batch_size=2, preprocess=preprocess)
    return [b["input"] for b in stream]


def test_calibration_batches_do_not_depend_on_file_creation_order(tmp_path: Path) -> None:
    photos = {"a.png": skdata.astronaut(), "b.png": skdata.coffee(), "c.png": skdata.chelsea()}
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in (
        (first, ["a.png", "b.png", "c.png"]),
        (second, ["c.png", "a.png", "b.png"]),
    ):
        folder.mkdir()
        for name in names:  # created in a different order: directory listing order differs
            skio.imsave(folder / name, photos[name], check_contrast=False)
    a, b = _stream_from(first), _stream_from(second)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
