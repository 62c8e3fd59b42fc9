"""File I/O that keeps the contract's promises: atomic writes, hashes, and
ONNX loading that treats model files as untrusted input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from compiler.errors import InvalidInput, UsageError

# Protobuf refuses messages over 2 GiB; larger models must use external data.
_MAX_PROTO_BYTES = 2**31 - 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only on success.

    A failed or interrupted writer leaves neither a half-written `final` nor the
    temporary file behind.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {final.parent}: {e.strerror}") from e
    if not os.access(final.parent, os.W_OK):
        raise UsageError(f"output directory {final.parent} is not writable; choose another --out")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def save_onnx(model: ir.Model | onnx.ModelProto, final: Path) -> None:
    """Serialize a model into one self-contained .onnx file, atomically and deterministically."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    data = proto.SerializeToString(deterministic=True)
    if len(data) > _MAX_PROTO_BYTES:
        raise InvalidInput(
            "model exceeds protobuf's 2 GiB limit; external data output is not supported yet"
        )
    atomic_write_bytes(final, data)


def _check_external_data_paths(proto: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external data that escapes the model's folder (../, absolute, symlinks)."""
    base = base_dir.resolve()
    tensors = list(onnx.external_data_helper._get_all_tensors(proto))
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), None)
        if not location:
            raise InvalidInput(f"tensor {t.name!r} has external data without a location")
        if os.path.isabs(location) or Path(location).drive:
            raise InvalidInput(
                f"tensor {t.name!r} points its external data at an absolute path ({location}); "
                "only files inside the model's folder are allowed"
            )
        target = (base / location).resolve()
        if base != target and base not in target.parents:
            raise InvalidInput(
                f"tensor {t.name!r} points its external data outside the model's folder ({location})"
            )
        if not target.is_file():
            raise InvalidInput(f"external data file {location!r} for tensor {t.name!r} is missing")


def load_onnx_proto(path: Path) -> onnx.ModelProto:
    """Load an ONNX file as untrusted input; raise InvalidInput with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"model file {path} does not exist")
    if not path.is_file():
        raise InvalidInput(f"model path {path} is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"model file {path} is empty")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-ish errors, etc.
        raise InvalidInput(f"{path} is not a valid ONNX model ({type(e).__name__})") from e
    if not proto.HasField("graph") or not proto.opset_import:
        raise InvalidInput(f"{path} is not a valid ONNX model (no graph or opset)")
    _check_external_data_paths(proto, path.parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except Exception as e:
        raise InvalidInput(f"cannot read external data of {path}: {e}") from e
    return proto
