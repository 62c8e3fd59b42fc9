"""A structural fuzzer: seeded mutants of a small valid model, each compiled by the CLI.

Every mutant is a file a stranger could hand us: an op type changed, a node input
dropped or added, an attribute value changed, an initializer whose declared dims
or dtype disagree with its data, a cycle, another opset, NaN weights, a renamed
or missing output. Whatever the mutant, edgec must answer as the design contract
says: exit 0 (it compiled), 2, 3 or 4 (never 1, the internal-error code), no
traceback, the input file untouched, and after a refusal nothing written.

The default run compiles a seeded sample; the slow run (`make test-slow`) 320.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.reliability.test_bad_inputs import run_cli

OP_TYPES = (
    "Relu",
    "Sigmoid",
    "Add",
    "Mul",
    "MatMul",
    "Conv",
    "Transpose",
    "Reshape",
    "Softmax",
    "Concat",
    "Gemm",
    "MaxPool",
    "BatchNormalization",
    "Identity",
)


def seed_model() -> onnx.ModelProto:
    """Conv → BatchNormalization → Relu → GlobalAveragePool → Flatten → Gemm, dynamic batch."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    var = numpy_helper.from_array(np.ones(4, np.float32), "var")
    inits = [
        init("w", 4, 3, 3, 3),
        init("b", 4),
        init("g", 4),
        init("beta", 4),
        init("mu", 4),
        var,
        init("fc", 5, 4),
        init("fcb", 5),
    ]
    graph = helper.make_graph(
        nodes,
        "seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


Mutation = Callable[[onnx.ModelProto, np.random.Generator], None]


def _node(m: onnx.ModelProto, rng: np.random.Generator) -> onnx.NodeProto:
    return m.graph.node[int(rng.integers(len(m.graph.node)))]


def _init(m: onnx.ModelProto, rng: np.random.Generator) -> TensorProto:
    return m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]


def change_op_type(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    _node(m, rng).op_type = str(rng.choice(OP_TYPES))


def drop_input(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    node = _node(m, rng)
    if node.input:
        del node.input[int(rng.integers(len(node.input)))]


def extra_input(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    names = ["x", "w", "b", "r", "p", "nowhere"] + [o for n in m.graph.node for o in n.output]
    _node(m, rng).input.append(str(rng.choice(names)))


def change_attribute(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    node = _node(m, rng)
    value = int(rng.choice([-3, -1, 0, 2, 7, 1000]))
    for attr in node.attribute:
        if attr.ints:
            attr.ints[int(rng.integers(len(attr.ints)))] = value
            return
        if attr.type == onnx.AttributeProto.INT:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(str(rng.choice(["axis", "group", "pads"])), value))


def change_initializer_dims(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    t = _init(m, rng)
    if t.dims:
        t.dims[int(rng.integers(len(t.dims)))] = int(rng.choice([0, 1, 2, 9, 100000]))
    else:
        t.dims.append(3)


def change_initializer_dtype(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    _init(m, rng).data_type = int(
        rng.choice(
            [
                TensorProto.INT64,
                TensorProto.FLOAT16,
                TensorProto.DOUBLE,
                TensorProto.UINT8,
                TensorProto.BOOL,
                TensorProto.STRING,
                99,
            ]
        )
    )


def make_cycle(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    """An early node reads a later node's output."""
    nodes = m.graph.node
    i = int(rng.integers(len(nodes) - 1))
    j = int(rng.integers(i + 1, len(nodes)))
    if nodes[i].input:
        nodes[i].input[0] = nodes[j].output[0]


def change_opset(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    m.opset_import[0].version = int(rng.choice([1, 6, 9, 11, 13, 21, 23, 30]))


def nan_weights(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    t = _init(m, rng)
    a = numpy_helper.to_array(t).copy()
    a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf])
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def rename_output(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    m.graph.output[0].name = str(rng.choice(["c", "nowhere", "x", ""]))


def drop_node(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    del m.graph.node[int(rng.integers(len(m.graph.node)))]


def duplicate_output(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    nodes = m.graph.node
    i, j = rng.choice(len(nodes), 2, replace=False)
    nodes[int(i)].output[0] = nodes[int(j)].output[0]


def change_input_type(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    tt = m.graph.input[0].type.tensor_type
    if rng.random() < 0.5:
        tt.elem_type = int(rng.choice([TensorProto.INT64, TensorProto.FLOAT16, TensorProto.BOOL]))
    else:
        del tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]


MUTATIONS: tuple[Mutation, ...] = (
    change_op_type,
    drop_input,
    extra_input,
    change_attribute,
    change_initializer_dims,
    change_initializer_dtype,
    make_cycle,
    change_opset,
    nan_weights,
    rename_output,
    drop_node,
    duplicate_output,
    change_input_type,
)


def mutant(seed: int) -> tuple[onnx.ModelProto, str]:
    """One or two seeded mutations of `seed_model`, and their names."""
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(seed_model())
    picked = [MUTATIONS[int(i)] for i in rng.choice(len(MUTATIONS), int(rng.integers(1, 3)))]
    for mutate in picked:
        mutate(model, rng)
    return model, "+".join(f.__name__ for f in picked)


def _check(tmp_path: Path, seed: int, capfd: pytest.CaptureFixture[str]) -> None:
    model, what = mutant(seed)
    src = tmp_path / "mutant.onnx"
    src.write_bytes(model.SerializeToString())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    code, text = run_cli("compile", str(src), "--out", str(out), "--report", "json")
    context = f"seed {seed} ({what}): exit {code}\n{text}"
    assert code in (0, 2, 3, 4), context
    # what libraries print to the terminal's file descriptors (onnxsim's C++ side) counts too
    terminal = "".join(capfd.readouterr())
    assert "Traceback" not in text + terminal, f"{context}\n{terminal}"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest, context
    if code != 0:
        assert not out.exists(), context
        assert text.strip().startswith("edgec: error: "), context
    else:
        nan = any(
            not np.isfinite(numpy_helper.to_array(t)).all()
            for t in model.graph.initializer
            if t.data_type == TensorProto.FLOAT
        )
        if nan:
            assert "nan" in text.lower() or "inf" in text.lower(), context


def test_seed_model_compiles(tmp_path: Path) -> None:
    """The seed itself is valid: a fuzzer whose seed fails tests nothing."""
    src = tmp_path / "seed.onnx"
    src.write_bytes(seed_model().SerializeToString())
    code, text = run_cli("compile", str(src), "--out", str(tmp_path / "o"), "--report", "json")
    assert code == 0, text


def test_every_mutation_changes_the_model() -> None:
    rng = np.random.default_rng(0)
    for mutate in MUTATIONS:
        model = copy.deepcopy(seed_model())
        for _ in range(5):
            mutate(model, rng)
        assert model.SerializeToString() != seed_model().SerializeToString(), mutate.__name__


@pytest.mark.parametrize("seed", range(0, 320, 27))
def test_mutant_sample(tmp_path: Path, seed: int, capfd: pytest.CaptureFixture[str]) -> None:
    _check(tmp_path, seed, capfd)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(320))
def test_mutant(tmp_path: Path, seed: int, capfd: pytest.CaptureFixture[str]) -> None:
    _check(tmp_path, seed, capfd)
