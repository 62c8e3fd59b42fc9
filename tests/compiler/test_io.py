from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler.ground.errors import InvalidInput, UsageError
from compiler.ground.io import atomic_path, atomic_write_bytes, load_onnx_proto, read_report


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def _model_with_external(tmp_path: Path, location: str) -> Path:
    w = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    w.data_location = onnx.TensorProto.EXTERNAL
    w.ClearField("raw_data")
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
        [w],
    )
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    path = _model_with_external(tmp_path, location)
    with pytest.raises(InvalidInput, match="external data|absolute path"):
        load_onnx_proto(path)


def test_external_data_symlink_escaping_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    path = _model_with_external(tmp_path, "link.bin")
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(InvalidInput, match="outside the model's folder"):
        load_onnx_proto(path)


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = _model_with_external(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    proto = load_onnx_proto(path)
    np.testing.assert_array_equal(numpy_helper.to_array(proto.graph.initializer[0]), np.arange(4))


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"not a model at all \x00\xff" * 10, "not a valid ONNX"),
        (None, "does not exist"),
    ],
)
def test_bad_files_raise_invalid_input(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidInput, match=match):
        load_onnx_proto(path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    """Artifacts are 0o666 less the umask (0644 usually), not mkstemp's private 0600."""
    import os
    import stat

    from compiler.ground.io import atomic_torch_save

    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_torch_save({"w": 1}, tmp_path / "b.pt")
    finally:
        os.umask(previous)
    for name in ("a.bin", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_read_report_refuses_what_a_command_cannot_use(tmp_path: Path) -> None:
    """One line through the caller's error class: unreadable, not JSON, not an object,
    or without the field the command reads (of the type it reads)."""
    good = tmp_path / "report.json"
    good.write_text('{"edgec_version": "0.1", "model": {"name": "m"}}')
    assert read_report(good, needs="model")["model"] == {"name": "m"}
    assert read_report(good, needs="edgec_version", kind=str)["edgec_version"] == "0.1"
    cases = {
        "absent.json": None,
        "truncated.json": '{"model": ',
        "list.json": "[1, 2]",
        "binary.json": b"\xff\xfe\x00",
        "no_model.json": '{"edgec_version": "0.1"}',
        "model_str.json": '{"model": "m"}',
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(InvalidInput, match="JSON report written by edgec") as e:
            read_report(path, needs="model")
        assert "\n" not in str(e.value), name
        with pytest.raises(UsageError):
            read_report(path, needs="model", error=UsageError)
