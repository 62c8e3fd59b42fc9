"""The bad-input corpus: every way a stranger's model, data or command line can be wrong.

Each case runs `edgec` (in-process through click's runner; the SIGINT case as a real
subprocess) and asserts the design contract:

- the exit code (2 usage, 4 invalid model or data, 130 interrupted);
- one line on the terminal, starting ``edgec: error:``, naming the problem, no traceback;
- the input files are untouched (sha256 before == after);
- no output directory, staging folder or half-written artifact is left behind.

INT8 calibration data (``--calib``) gets the same cases as ``--eval`` once INT8 lands.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main

# --------------------------------------------------------------------------- helpers


def _model(
    nodes: list[onnx.NodeProto],
    *,
    x_shape: list = ("N", 3, 8, 8),  # type: ignore[assignment]
    y_shape: list | None = None,
    inits: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(inits),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()]
    )
    model.ir_version = 8
    return model


def good_model() -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten, dynamic batch: a valid model."""
    w = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["y"]),
        ],
        y_shape=["N", 4],
        inits=[w],
    )


def _save(path: Path, model: onnx.ModelProto) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str | None]:
    """Every path under root (links not followed) with its content hash (None for dirs)."""
    out: dict[str, str | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = _digest(p) if p.is_file() and not p.is_symlink() else None
    return out


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output  # click ≥ 8.2 mixes stderr into output


def assert_refused(
    tmp_path: Path, args: list[str], code: int, says: str | list[str], out: Path | None = None
) -> str:
    """Run edgec; check exit code, one-line message, untouched inputs, nothing written."""
    before = _tree(tmp_path)
    got, text = run_cli(*args)
    assert got == code, f"exit {got}, expected {code}: {text}"
    line = text.strip()
    assert "\n" not in line, f"more than one line:\n{text}"
    assert line.startswith("edgec: error: "), text
    assert "Traceback" not in text
    for fragment in [says] if isinstance(says, str) else says:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in: {line}"
    assert _tree(tmp_path) == before, "inputs changed or something was written"
    if out is not None:
        assert not out.exists()
    return line


# --------------------------------------------------------------------------- model files


def _truncated(tmp: Path) -> Path:
    data = good_model().SerializeToString()
    path = tmp / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_onnx(tmp: Path) -> Path:
    path = tmp / "photo.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.onnx"
    path.write_bytes(b"")
    return path


def _no_graph(tmp: Path) -> Path:
    model = onnx.ModelProto(ir_version=8)  # parses, but holds nothing
    return _save(tmp / "nograph.onnx", model)


def _opset_99(tmp: Path) -> Path:
    model = good_model()
    model.opset_import[0].version = 99
    return _save(tmp / "opset99.onnx", model)


def _custom_domain_op(tmp: Path) -> Path:
    model = _model(
        [helper.make_node("FancyPool", ["x"], ["y"], domain="com.example")],
        opsets={"": 17, "com.example": 1},
    )
    return _save(tmp / "custom.onnx", model)


def _unknown_onnx_op(tmp: Path) -> Path:
    return _save(tmp / "unknown.onnx", _model([helper.make_node("FancyPool", ["x"], ["y"])]))


def _dangling_input(tmp: Path) -> Path:
    model = _model([helper.make_node("Add", ["x", "nowhere"], ["y"])])
    return _save(tmp / "dangling.onnx", model)


def _absurd_input(tmp: Path) -> Path:
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        x_shape=[1, 100000, 100000, 100],
        y_shape=[1, 100000, 100000, 100],
    )
    return _save(tmp / "huge.onnx", model)


def _lying_initializer(tmp: Path) -> Path:
    """An initializer that declares 10^10 floats but carries 16 bytes."""
    w = TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[100000, 100000], raw_data=bytes(16)
    )
    model = _model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        x_shape=[1, 100000],
        y_shape=[1, 100000],
        inits=[w],
    )
    return _save(tmp / "liar.onnx", model)


def _lying_typed_initializer(tmp: Path) -> Path:
    """float_data with 2 values for a [3, 4] tensor."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 4], float_data=[1.0, 2.0])
    model = _model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        x_shape=[1, 3, 4],
        y_shape=[1, 3, 4],
        inits=[w],
    )
    return _save(tmp / "liar2.onnx", model)


def _external_short(tmp: Path) -> Path:
    """External data file shorter than the tensor it stores."""
    path = _external(tmp, "weights.bin")
    (path.parent / "weights.bin").write_bytes(np.ones(10, np.float32).tobytes())
    return path


def _external(tmp: Path, location: str) -> Path:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    model = good_model()
    model.graph.ClearField("initializer")
    model.graph.initializer.append(w)
    return _save(tmp / "m" / "model.onnx", model)


def _secret(tmp: Path) -> Path:
    secret = tmp / "secret.bin"
    secret.write_bytes(np.ones(108, np.float32).tobytes())
    return secret


def _external_dotdot(tmp: Path) -> Path:
    _secret(tmp)
    return _external(tmp, "../secret.bin")


def _external_absolute(tmp: Path) -> Path:
    return _external(tmp, str(_secret(tmp).resolve()))


def _external_symlink(tmp: Path) -> Path:
    secret = _secret(tmp)
    path = _external(tmp, "weights.bin")
    (path.parent / "weights.bin").symlink_to(secret)
    return path


def _external_missing(tmp: Path) -> Path:
    return _external(tmp, "weights.bin")


def _directory(tmp: Path) -> Path:
    path = tmp / "folder.onnx"
    path.mkdir()
    return path


def _cycle(tmp: Path) -> Path:
    """Relu reads Neg's output, Neg reads Relu's."""
    model = _model(
        [
            helper.make_node("Relu", ["b"], ["a"]),
            helper.make_node("Neg", ["a"], ["b"]),
            helper.make_node("Add", ["x", "b"], ["y"]),
        ]
    )
    return _save(tmp / "cycle.onnx", model)


def _two_producers(tmp: Path) -> Path:
    model = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])])
    return _save(tmp / "twice.onnx", model)


def _string_raw_initializer(tmp: Path) -> Path:
    model = good_model()
    model.graph.initializer[0].data_type = TensorProto.STRING
    return _save(tmp / "string.onnx", model)


def _unknown_dtype_initializer(tmp: Path) -> Path:
    model = good_model()
    model.graph.initializer[0].data_type = 99
    return _save(tmp / "dtype99.onnx", model)


def _rank0_conv_weight(tmp: Path) -> Path:
    """Structurally fine, but a Conv weight of shape [108]: only a runtime says no."""
    model = good_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.append(108)
    return _save(tmp / "rank1w.onnx", model)


MODEL_CASES: dict[str, tuple[Callable[[Path], Path], int, list[str]]] = {
    "cycle": (_cycle, 4, ["cycle", "Relu"]),
    "two-producers": (_two_producers, 4, ["'y'", "produced twice"]),
    "string-initializer-with-raw-bytes": (_string_raw_initializer, 4, ["'w'", "string"]),
    "unknown-initializer-dtype": (_unknown_dtype_initializer, 4, ["'w'", "unknown data type 99"]),
    "runtime-refuses": (_rank0_conv_weight, 4, ["does not load in onnxruntime", "Conv"]),
    "truncated-protobuf": (_truncated, 4, ["not a valid ONNX model"]),
    "not-onnx": (_not_onnx, 4, ["not a valid ONNX model"]),
    "empty-file": (_empty, 4, ["empty"]),
    "no-graph": (_no_graph, 4, ["not a valid ONNX model"]),
    "opset-too-new": (_opset_99, 4, ["opset 99", "supports"]),
    "custom-domain-op": (_custom_domain_op, 4, ["FancyPool"]),
    "unknown-onnx-op": (_unknown_onnx_op, 4, ["FancyPool"]),
    "dangling-input": (_dangling_input, 4, ["nowhere"]),
    "absurd-input-dims": (_absurd_input, 4, ["over 1 GiB"]),
    "initializer-lies-about-size": (_lying_initializer, 4, ["'w'", "wrong size"]),
    "typed-initializer-too-short": (_lying_typed_initializer, 4, ["'w'", "wrong size"]),
    "external-data-too-short": (_external_short, 4, ["'w'", "wrong size"]),
    "external-data-dotdot": (_external_dotdot, 4, ["outside the model's folder"]),
    "external-data-absolute": (_external_absolute, 4, ["absolute path"]),
    "external-data-symlink": (_external_symlink, 4, ["outside the model's folder"]),
    "external-data-missing": (_external_missing, 4, ["missing"]),
    "directory-not-file": (_directory, 4, ["not a file"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_file(tmp_path: Path, case: str) -> None:
    make, code, says = MODEL_CASES[case]
    model = make(tmp_path)
    out = tmp_path / "out"
    assert_refused(
        tmp_path, ["compile", str(model), "--out", str(out), "--threads", "1"], code, says, out
    )


def test_missing_model_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["compile", str(tmp_path / "nope.onnx"), "--out", str(out)]
    assert_refused(tmp_path, args, 4, "does not exist", out)


def test_unknown_zoo_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_refused(
        tmp_path, ["compile", "mobilenet_v9", "--out", str(out)], 2, "unknown model", out
    )


def test_input_shape_of_wrong_rank(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    out = tmp_path / "out"
    args = ["compile", str(model), "--input-shape", "1,3,8", "--out", str(out)]
    assert_refused(tmp_path, args, 4, "rank", out)


def test_input_shape_that_is_not_a_shape(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    out = tmp_path / "out"
    args = ["compile", str(model), "--input-shape", "1,three,8,8", "--out", str(out)]
    assert_refused(tmp_path, args, 2, "--input-shape", out)


def test_fixed_batch_model_with_another_batch(tmp_path: Path) -> None:
    model = _save(tmp_path / "static.onnx", _static_batch_model())
    out = tmp_path / "out"
    args = ["compile", str(model), "--batch", "4", "--out", str(out), "--threads", "1"]
    assert_refused(tmp_path, args, 2, ["fixes its batch dimension at 1", "--batch 1"], out)


def test_a_bug_is_still_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compiler.pipeline

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("first line\nsecond line\n  third")

    monkeypatch.setattr(compiler.pipeline, "compile_model", crash)
    model = _save(tmp_path / "good.onnx", good_model())
    out = tmp_path / "out"
    line = assert_refused(
        tmp_path, ["compile", str(model), "--out", str(out)], 1, "internal error", out
    )
    assert "first line second line third" in line and "EDGEC_DEBUG=1" in line


# --------------------------------------------------------------------------- unusual but valid


def _static_batch_model() -> onnx.ModelProto:
    """Exported with a static batch of 1, as many real-world ONNX files are."""
    model = good_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    return model


def _unsorted_model() -> onnx.ModelProto:
    """Nodes out of topological order: the ONNX spec forbids it, onnxruntime runs it."""
    model = good_model()
    nodes = list(model.graph.node)
    model.graph.ClearField("node")
    model.graph.node.extend(reversed(nodes))
    return model


@pytest.mark.parametrize(
    "make", [_static_batch_model, _unsorted_model], ids=["static-batch", "unsorted"]
)
def test_unusual_but_valid_models_compile(
    tmp_path: Path, make: Callable[[], onnx.ModelProto]
) -> None:
    """Both used to end in exit 1 (a batch-16 evaluation run; onnx-ir's cloner)."""
    model = _save(tmp_path / "model.onnx", make())
    digest = _digest(model)
    out = tmp_path / "out"
    code, text = run_cli(
        "compile", str(model), "--out", str(out), "--threads", "1", "--report", "json"
    )
    assert code == 0, text
    assert _digest(model) == digest
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["max_abs_error"] < 1e-5
    assert report["accuracy"]["samples"] == 16


# --------------------------------------------------------------------------- torch factories


FACTORIES = """
import torch

def boom():
    raise RuntimeError("the factory exploded")

def not_a_module():
    return {"weights": [1, 2, 3]}
"""


@pytest.mark.parametrize(
    ("factory", "code", "says"),
    [
        ("boom", 4, ["factory", "the factory exploded"]),
        ("not_a_module", 4, ["dict", "not a torch.nn.Module"]),
        ("missing", 2, ["no callable"]),
    ],
)
def test_bad_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str, code: int, says: list[str]
) -> None:
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "edgec_bad_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(pkg))
    out = tmp_path / "out"
    args = ["compile", f"edgec_bad_factories:{factory}", "--input-shape", "1,4", "--out", str(out)]
    assert_refused(tmp_path, args, code, says, out)


# --------------------------------------------------------------------------- evaluation data


def _eval_case(tmp: Path, name: str, array: object) -> Path:
    path = tmp / name
    if isinstance(array, dict):
        np.savez(path, **array)
    else:
        np.save(path, array, allow_pickle=True)
    return path


EVAL_CASES: dict[str, tuple[Callable[[], object], str, list[str]]] = {
    "wrong-shape": (lambda: np.zeros((4, 3, 9, 9), np.float32), "x.npy", ["shape", "(N, 3, 8, 8)"]),
    "wrong-rank": (lambda: np.zeros((4, 3, 8), np.float32), "x.npy", ["shape"]),
    "wrong-dtype": (lambda: np.zeros((4, 3, 8, 8), np.int64), "x.npy", ["int64", "float32"]),
    "nan": (lambda: np.full((4, 3, 8, 8), np.nan, np.float32), "x.npy", ["NaN or Inf"]),
    "inf": (
        lambda: (
            np.where(np.eye(8, dtype=bool), np.inf, 0).astype(np.float32)[None, None].repeat(3, 1)
        ),
        "x.npy",
        ["NaN or Inf"],
    ),
    "zero-samples": (lambda: np.zeros((0, 3, 8, 8), np.float32), "x.npy", ["no samples"]),
    "npz-without-input": (
        lambda: {"images": np.zeros((4, 3, 8, 8), np.float32)},
        "x.npz",
        ["no array named 'x'"],
    ),
    "pickled-objects": (
        lambda: np.array([{"a": 1}, None], dtype=object),
        "x.npy",
        ["pickled Python objects"],
    ),
    "npz-pickled-objects": (
        lambda: {"x": np.array([{"a": 1}], dtype=object)},
        "x.npz",
        ["'x'", "pickled Python objects"],
    ),
    "npz-pickled-labels": (
        lambda: {
            "x": np.zeros((2, 3, 8, 8), np.float32),
            "labels": np.array([None, 1], dtype=object),
        },
        "x.npz",
        ["'labels'", "pickled Python objects"],
    ),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_bad_evaluation_data(tmp_path: Path, case: str) -> None:
    make, name, says = EVAL_CASES[case]
    model = _save(tmp_path / "good.onnx", good_model())
    data = _eval_case(tmp_path, name, make())
    out = tmp_path / "out"
    args = ["compile", str(model), "--eval", str(data), "--out", str(out), "--threads", "1"]
    assert_refused(tmp_path, args, 4, says, out)


def test_evaluation_data_that_does_not_exist(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    out = tmp_path / "out"
    args = ["compile", str(model), "--eval", str(tmp_path / "nope.npy"), "--out", str(out)]
    assert_refused(tmp_path, args, 4, "does not exist", out)


# --------------------------------------------------------------------------- output, config, gate


def test_output_under_a_regular_file(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    blocker = tmp_path / "somefile"
    blocker.write_text("I am a file")
    args = ["compile", str(model), "--out", str(blocker / "sub"), "--threads", "1"]
    assert_refused(tmp_path, args, 2, ["cannot write", "--out"])


def test_output_that_is_a_file(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    blocker = tmp_path / "somefile"
    blocker.write_text("I am a file")
    args = ["compile", str(model), "--out", str(blocker), "--threads", "1"]
    assert_refused(tmp_path, args, 2, "not a directory")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: permission bits do not stop root from writing",
)
def test_output_in_a_read_only_directory(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        args = ["compile", str(model), "--out", str(locked / "out"), "--threads", "1"]
        assert_refused(tmp_path, args, 2, "cannot write")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.toml", "threads = [unclosed", "not valid TOML/JSON"),
        ("bad.json", "{not json", "not valid TOML/JSON"),
        ("typo.toml", "thread = 2\n", "unknown key 'thread'"),
        ("neg.toml", "threads = -1\n", "--threads"),
    ],
)
def test_bad_config_file(tmp_path: Path, name: str, content: str, says: str) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    config = tmp_path / name
    config.write_text(content)
    out = tmp_path / "out"
    args = ["compile", str(model), "--config", str(config), "--out", str(out)]
    assert_refused(tmp_path, args, 2, says, out)


def test_missing_config_file(tmp_path: Path) -> None:
    model = _save(tmp_path / "good.onnx", good_model())
    out = tmp_path / "out"
    args = ["compile", str(model), "--config", str(tmp_path / "nope.toml"), "--out", str(out)]
    assert_refused(tmp_path, args, 2, "cannot read config file", out)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.onnx", None),  # an ONNX model is not a report
        ("report.json", "[1, 2, 3]"),
        ("report.json", '{"passed": true}'),
        ("report.json", "{truncated"),
    ],
)
def test_gate_on_a_non_report(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is None:
        _save(path, good_model())
    else:
        path.write_text(content)
    assert_refused(
        tmp_path, ["gate", str(path), "--max-size-mb", "10"], 4, "JSON report written by edgec"
    )


# --------------------------------------------------------------------------- torch weights


class _Payload:
    """Unpickling this creates a file: proof that arbitrary code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cached_weights_that_run_code_are_refused_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from models import _cache

    monkeypatch.setenv("EDGEC_CACHE", str(tmp_path / "cache"))
    recipe = {"arch": "tiny", "version": 1}
    path = _cache.cache_dir() / f"tiny-{_cache.recipe_key(recipe)}.pt"
    path.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": _Payload(marker)}, path)
    poisoned = _digest(path)

    fresh = {"w": torch.arange(3.0)}
    state = _cache.load_or_create("tiny", recipe, lambda: fresh)
    assert not marker.exists(), "weights_only=False: the pickle ran code"
    assert torch.equal(state["w"], fresh["w"])  # rebuilt, not trusted
    assert _digest(path) != poisoned  # the poisoned file was replaced ...
    reloaded = torch.load(path, weights_only=True)  # ... by plain tensors
    assert set(reloaded) == {"w"} and torch.equal(reloaded["w"], fresh["w"])


@pytest.mark.parametrize(
    "payload",
    [{"w": 3}, [1, 2, 3], b"raw bytes"],
    ids=["dict-of-int", "list", "not-a-pickle"],
)
def test_cached_weights_that_are_not_a_state_dict_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: object
) -> None:
    import torch

    from models import _cache

    monkeypatch.setenv("EDGEC_CACHE", str(tmp_path / "cache"))
    recipe = {"arch": "tiny", "version": 2}
    path = _cache.cache_dir() / f"tiny-{_cache.recipe_key(recipe)}.pt"
    path.parent.mkdir(parents=True)
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    state = _cache.load_or_create("tiny", recipe, lambda: {"w": torch.ones(1)})
    assert torch.equal(state["w"], torch.ones(1))


def test_torch_load_of_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    """The primitive `_cache` relies on: weights_only=True refuses arbitrary objects."""
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


# --------------------------------------------------------------------------- interruption


@pytest.mark.parametrize(
    "delay", [0.5, pytest.param(3.0, marks=pytest.mark.slow)], ids=["early", "later"]
)
def test_sigint_leaves_nothing_behind(tmp_path: Path, delay: float) -> None:
    """Ctrl-C in the middle of `edgec compile mobilenet_v2`: exit 130, one line, no output.

    The signal is sent `delay` seconds after the run's staging folder appears (loading
    and export are done; the rest of the run takes ~10 s on one idle core), so the test
    interrupts real work at two different points.
    """
    out = tmp_path / "build" / "mnv2"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compiler.cli",
            "compile",
            "mobilenet_v2",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 240
        staged = False
        while time.monotonic() < deadline and proc.poll() is None:
            if out.parent.exists() and any(
                p.name.startswith(".mnv2.edgec-") for p in out.parent.iterdir()
            ):
                staged = True
                break
            time.sleep(0.05)
        assert staged, f"the run never staged (exit {proc.poll()})"
        time.sleep(delay)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert stderr.strip().splitlines()[-1] == (
        "edgec: error: interrupted; no partial output was left behind"
    )
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no staging folder, no temporary file


def test_report_json_of_a_refused_run_does_not_exist(tmp_path: Path) -> None:
    """A refused run writes no report either (a CI step must not read a stale one)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"edgec_version": "old"}))
    before = _tree(tmp_path)
    code, _ = run_cli("compile", str(_empty(tmp_path)), "--out", str(out))
    assert code == 4
    after = _tree(tmp_path)
    after.pop("empty.onnx")
    before.pop("empty.onnx", None)
    assert after == before  # the old report is neither replaced nor deleted
