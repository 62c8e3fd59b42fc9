"""File I/O that keeps the contract's promises: atomic writes, hashes, and
ONNX loading that treats model files as untrusted input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from compiler.ground.errors import InvalidInput, UsageError

# Protobuf refuses messages over 2 GiB; larger models must use external data.
_MAX_PROTO_BYTES = 2**31 - 1


def read_report(
    file: Path, *, needs: str, kind: type = dict, error: Callable[[str], Exception] = InvalidInput
) -> dict[str, Any]:
    """A report.json written by edgec, read back by a command that takes it (compare,
    gate, package): one line through `error` (its exit code: compare's usage error 2,
    the others' invalid input 4) when the file cannot be read, is not JSON, or lacks
    the field `needs` of type `kind` that the command goes on to use."""
    try:
        data = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise error(f"{file} is not a readable JSON report written by edgec ({why})") from None
    if not isinstance(data, dict) or not isinstance(data.get(needs), kind):
        raise error(f"{file} is not a JSON report written by edgec (no {needs})")
    return data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask (0644 under the
    usual 022), not mkstemp's private 0600; an artifact is meant to be read by others."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask: from /proc on Linux (no window in which it is changed),
    else by setting it and putting it straight back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    os.fchmod(fd, _file_mode())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_torch_save(state: object, final: Path) -> None:
    """`torch.save(state)` to `final` through a synced temporary file beside it: a
    crash or Ctrl-C leaves the previous file (a weight cache, a QAT checkpoint) or
    none, never a torn one. OSErrors propagate as they are (callers decide)."""
    import torch

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
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


def _check_opsets(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse opsets newer than the installed onnx defines: their operators mean nothing yet."""
    newest = {
        "": onnx.defs.onnx_opset_version(),
        "ai.onnx": onnx.defs.onnx_opset_version(),
        "ai.onnx.ml": onnx.defs.onnx_ml_opset_version(),
    }
    for entry in proto.opset_import:
        limit = newest.get(entry.domain)
        if limit is not None and entry.version > limit:
            domain = entry.domain or "ai.onnx"
            raise InvalidInput(
                f"{path} uses {domain} opset {entry.version}; edgec supports {domain} opsets up to "
                f"{limit} (onnx {onnx.__version__}): re-export the model with opset {limit} or lower"
            )


# Packed element types (several elements per byte): their raw size is not count * itemsize.
_PACKED_TYPES = frozenset({"INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1"})


def _check_initializer(t: onnx.TensorProto, path: Path) -> None:
    """Refuse an initializer whose data does not hold the elements its dims declare."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return
    if t.data_type not in onnx.TensorProto.DataType.values():
        raise InvalidInput(f"{path}: initializer {t.name!r} has an unknown data type {t.data_type}")
    if t.data_type == onnx.TensorProto.STRING and t.HasField("raw_data"):
        raise InvalidInput(
            f"{path}: initializer {t.name!r} is declared a string tensor but holds raw bytes"
        )
    if t.HasField("raw_data"):
        type_name = onnx.TensorProto.DataType.Name(t.data_type)
        if type_name in _PACKED_TYPES or t.data_type == onnx.TensorProto.STRING:
            return
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            return
        count = 1
        for d in t.dims:
            count *= d
        if len(t.raw_data) == count * itemsize:
            return
        detail = f"{len(t.raw_data)} bytes instead of {count * itemsize}"
    else:
        try:
            onnx.numpy_helper.to_array(t)  # typed fields: small tensors; a mismatch fails fast
            return
        except Exception as e:  # noqa: BLE001 - any decoding error means the data is bad
            detail = " ".join(str(e).split())[:200]
    raise InvalidInput(
        f"{path}: initializer {t.name!r} of shape {list(t.dims)} has data of the wrong size ({detail})"
    )


def _check_graph(
    graph: onnx.GraphProto,
    path: Path,
    opsets: dict[str, int],
    functions: set[tuple[str, str]],
    outer: frozenset[str] = frozenset(),
) -> None:
    """Every ONNX-domain operator exists at the model's opset; every node input comes from
    somewhere (graph input, initializer, a node's output, or an enclosing graph); the
    initializers hold what their dims declare. Node order is not checked (onnxruntime
    accepts unsorted graphs; the passes sort them)."""
    known = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    known |= {t.values.name for t in graph.sparse_initializer}
    known |= {name for node in graph.node for name in node.output if name}
    for t in graph.initializer:
        _check_initializer(t, path)
    for node in graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        label = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
        if domain in ("", "ai.onnx.ml") and (node.domain, node.op_type) not in functions:
            version = opsets.get(domain)
            if version is None:
                raise InvalidInput(
                    f"{path}: {label} is in domain {domain!r}, which the model does not import"
                )
            try:
                onnx.defs.get_schema(node.op_type, version, domain)
            except onnx.defs.SchemaError:
                raise InvalidInput(
                    f"{path} uses operator {node.op_type!r}, which {domain or 'ai.onnx'} opset "
                    f"{version} does not define (a custom operator needs its own domain)"
                ) from None
        for name in node.input:
            if name and name not in known:
                raise InvalidInput(
                    f"{path}: input {name!r} of {label} is not a graph input, an initializer "
                    "or any node's output"
                )
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                _check_graph(sub, path, opsets, functions, frozenset(known))
    _check_single_producers(graph, path)
    _check_acyclic(graph, path)


def _check_single_producers(graph: onnx.GraphProto, path: Path) -> None:
    """Each tensor has one producer (ONNX graphs are in SSA form)."""
    seen = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        for name in node.output:
            if name in seen:
                raise InvalidInput(
                    f"{path}: tensor {name!r} is produced twice (by {node.op_type} and before); "
                    "every tensor must have one producer"
                )
            if name:
                seen.add(name)


def _check_acyclic(graph: onnx.GraphProto, path: Path) -> None:
    """The nodes can be put in an order where each reads only what earlier ones wrote
    (Kahn's algorithm over the graph's own tensors; outer-scope names count as given)."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    waiting = [{producer[name] for name in node.input if name in producer} for node in graph.node]
    readers: dict[int, list[int]] = {}
    for i, deps in enumerate(waiting):
        for d in deps:
            readers.setdefault(d, []).append(i)
    ready = [i for i, deps in enumerate(waiting) if not deps]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for r in readers.get(i, ()):
            waiting[r].discard(i)
            if not waiting[r]:
                ready.append(r)
    if done < len(graph.node):
        stuck = [graph.node[i] for i, deps in enumerate(waiting) if deps]
        first = stuck[0]
        label = f"{first.op_type} node {first.name!r}" if first.name else f"{first.op_type} node"
        raise InvalidInput(
            f"{path}: the graph has a cycle: {label} and {len(stuck) - 1} other node(s) "
            "wait on each other's outputs"
        )


def _check_structure(proto: onnx.ModelProto, path: Path) -> None:
    """The checks of `_check_graph`, on the main graph and its subgraphs."""
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    functions = {(f.domain, f.name) for f in proto.functions}
    _check_graph(proto.graph, path, opsets, functions)


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
    _check_opsets(proto, path)
    _check_external_data_paths(proto, path.parent)
    _check_structure(proto, path)
    external = [
        t
        for t in onnx.external_data_helper._get_all_tensors(proto)
        if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except Exception as e:
        raise InvalidInput(f"cannot read external data of {path}: {e}") from e
    for t in external:
        _check_initializer(t, path)
    return proto
