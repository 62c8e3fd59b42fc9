"""The ONNX conformance run: every ONNX backend node test through cleanup + fusion.

The full run (about 1,900 cases, ~40 s of work on one core plus ~10 s to collect
the cases per process) is split into `SHARDS` tests so pytest-xdist spreads it
over the workers. Each shard must have zero failures and run at least
`MIN_RUN_PER_SHARD` cases (measured with onnx 1.23 / onnxruntime 1.31: 1,429 of
1,884 cases run, about 357 per shard), so a change that quietly skips
everything cannot pass.
"""

from __future__ import annotations

import types

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from compiler import conformance
from compiler.conformance import compare, run_case, run_conformance, shard

SHARDS = 4
MIN_RUN_PER_SHARD = 330


@pytest.mark.parametrize("index", range(SHARDS))
def test_onnx_node_tests_keep_their_outputs(index: int) -> None:
    result = run_conformance(shard(index, SHARDS))
    failures = "\n".join(f"{name}: {reason}" for name, reason in result.failed)
    assert not result.failed, f"{len(result.failed)} cases changed:\n{failures}"
    assert result.run >= MIN_RUN_PER_SHARD, result.skipped_counts
    assert result.run + sum(result.skipped_counts.values()) == result.total


def test_shards_cover_every_case_once() -> None:
    names = conformance.case_names()
    picked = [n for i in range(SHARDS) for n in names if shard(i, SHARDS)(n)]
    assert sorted(picked) == sorted(names) and len(names) > 1800


def _case(model: onnx.ModelProto, inputs: list, outputs: list) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        name="test_fake", model=model, data_sets=[(inputs, outputs)], rtol=1e-3, atol=1e-7
    )


def _add_model(opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "add",
        [
            helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def test_a_pass_that_changes_the_function_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner catches a broken pipeline (here: every Add silently becomes Sub)."""
    import compiler.stages.optimize

    def broken(model: ir.Model, **_: object) -> tuple[ir.Model, list]:
        for node in model.graph:
            if node.op_type == "Add":
                node.op_type = "Sub"
        return model, []

    a, b = np.ones(3, np.float32), np.arange(3, dtype=np.float32)
    case = _case(_add_model(), [a, b], [a + b])
    assert run_case(case) == ("passed", "")
    monkeypatch.setattr(compiler.stages.optimize, "optimize", broken)
    status, reason = run_case(case)
    assert status == "failed" and "output 'c'" in reason


def test_onnxruntime_disagreeing_with_the_reference_is_a_skip() -> None:
    a = np.ones(3, np.float32)
    status, reason = run_case(_case(_add_model(), [a, a], [a * 3]))
    assert (status, reason) == ("skipped", conformance.SKIP_ORT_DISAGREES)


def test_versions_are_stamped_down_only_when_exact() -> None:
    model = _add_model(opset=28, ir_version=14)
    stamped = conformance._stamp_down(model)
    assert stamped.ir_version == conformance.ORT_MAX_IR_VERSION
    assert stamped.opset_import[0].version == conformance.ORT_MAX_OPSET  # Add-14 at both
    assert model.ir_version == 14  # the case's own model is not edited
    a = np.ones(3, np.float32)
    assert run_case(_case(model, [a, a], [a + a])) == ("passed", "")
    # an op whose schema changed after opset 26 cannot be stamped down
    newer = [
        s.name
        for s in onnx.defs.get_all_schemas()
        if s.domain == "" and conformance.ORT_MAX_OPSET < s.since_version <= 28
    ]
    if newer:
        model.graph.node[0].op_type = newer[0]
        with pytest.raises(conformance._Skip, match="opset"):
            conformance._stamp_down(model)


@pytest.mark.parametrize(
    ("want", "got", "ok"),
    [
        (np.array([1.0, np.nan], np.float32), np.array([1.00001, np.nan], np.float32), True),
        (np.array([1.0, np.nan], np.float32), np.array([np.nan, 1.0], np.float32), False),
        (np.array([1.0, 2.0], np.float32), np.array([1.0, 2.001], np.float32), False),
        (np.array([np.inf], np.float32), np.array([np.inf], np.float32), True),
        (np.array([np.inf], np.float32), np.array([-np.inf], np.float32), False),
        (np.array([1.0], np.float16), np.array([1.0009765625], np.float16), True),  # one ulp
        (np.array([1.0], np.float16), np.array([1.0078125], np.float16), False),  # eight ulps
        (np.array([3], np.int64), np.array([3], np.int32), False),  # dtype
        (np.array([3, 4], np.int64), np.array([3, 5], np.int64), False),  # ints are exact
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), False),  # shape
        (np.array(["a", "b"], object), np.array(["a", "b"], object), True),
        (np.array(["a", "b"], object), np.array(["a", "c"], object), False),
        ([np.ones(2, np.float32)], [np.ones(2, np.float32)], True),
        ([np.ones(2, np.float32)], [], False),
        (None, None, True),
        (None, np.ones(1, np.float32), False),
    ],
)
def test_compare(want, got, ok: bool) -> None:
    assert (compare(want, got) is None) is ok
