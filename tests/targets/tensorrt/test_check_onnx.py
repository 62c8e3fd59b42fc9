"""check_onnx_for_tensorrt: what TensorRT 10's ONNX parser is known to reject, without TensorRT."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from targets.tensorrt.settings import UNSUPPORTED_OPS, check_onnx_for_tensorrt
from tests.targets.tensorrt.conftest import F32, dynamic_mlp, qdq_conv, single_node, static_mlp


def test_clean_models_have_no_problems() -> None:
    assert check_onnx_for_tensorrt(static_mlp()) == []
    assert check_onnx_for_tensorrt(dynamic_mlp()) == []
    assert check_onnx_for_tensorrt(qdq_conv()) == []


def test_old_and_new_opsets() -> None:
    old = single_node("Relu", [("x", F32, [1])], [("y", F32, [1])], opset=8)
    (problem,) = check_onnx_for_tensorrt(old)
    assert "opset 8 is older" in problem and "--opset 17" in problem
    new = single_node("Relu", [("x", F32, [1])], [("y", F32, [1])], opset=30)
    assert "opset 30 is newer" in check_onnx_for_tensorrt(new)[0]


def test_unsupported_operators_are_grouped_by_type() -> None:
    model = single_node("Unique", [("x", F32, [6])], [("y", F32, [None])])
    (problem,) = check_onnx_for_tensorrt(model)
    assert problem.startswith("Unique is not supported by TensorRT's ONNX parser (1 node(s)")
    assert {"QLinearConv", "MatMulInteger", "ConvInteger", "SequenceAt"} <= UNSUPPORTED_OPS
    # What the matrix marks supported is not flagged.
    assert not {"Conv", "QuantizeLinear", "DequantizeLinear", "NonZero", "Mod"} & UNSUPPORTED_OPS


def test_custom_domain_needs_a_plugin_unless_a_local_function() -> None:
    model = single_node("FusedConv", [("x", F32, [1])], [("y", F32, [1])], domain="com.microsoft")
    (problem,) = check_onnx_for_tensorrt(model)
    assert "com.microsoft::FusedConv is not a standard ONNX operator" in problem
    func = helper.make_function(
        "com.microsoft",
        "FusedConv",
        ["x"],
        ["y"],
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_opsetid("", 17)],
    )
    model.functions.append(func)
    assert check_onnx_for_tensorrt(model) == []


def test_subgraphs_are_searched() -> None:
    then = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["u"])],
        "then",
        [],
        [helper.make_tensor_value_info("u", F32, [None])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", F32, [None])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", F32, [6]),
        ],
        [helper.make_tensor_value_info("y", F32, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert any(p.startswith("Unique") for p in check_onnx_for_tensorrt(model))


def test_documented_attribute_restrictions() -> None:
    resize = single_node(
        "Resize",
        [("x", F32, [1, 1, 4, 4]), ("", F32, []), ("scales", F32, [4])],
        [("y", F32, [1, 1, 8, 8])],
        mode="cubic",
    )
    assert "mode 'cubic'" in check_onnx_for_tensorrt(resize)[0]
    topk = single_node(
        "TopK",
        [("x", F32, [8]), ("k", TensorProto.INT64, [1])],
        [("v", F32, [3]), ("i", TensorProto.INT64, [3])],
        sorted=0,
    )
    assert "sorted=0" in check_onnx_for_tensorrt(topk)[0]
    pool = single_node(
        "MaxPool",
        [("x", F32, [1, 1, 4, 4])],
        [("y", F32, [1, 1, 2, 2]), ("idx", TensorProto.INT64, [1, 1, 2, 2])],
        kernel_shape=[2, 2],
    )
    assert "Indices" in check_onnx_for_tensorrt(pool)[0]
    assert (
        check_onnx_for_tensorrt(
            single_node(
                "MaxPool",
                [("x", F32, [1, 1, 4, 4])],
                [("y", F32, [1, 1, 2, 2])],
                kernel_shape=[2, 2],
            )
        )
        == []
    )


def test_types_tensorrt_has_no_form_for() -> None:
    strings = single_node(
        "Identity", [("x", TensorProto.STRING, [1])], [("y", TensorProto.STRING, [1])]
    )
    problems = check_onnx_for_tensorrt(strings)
    assert len(problems) == 2 and all("STRING" in p for p in problems)
    double = single_node(
        "Add",
        [("x", TensorProto.DOUBLE, [2]), ("b", TensorProto.DOUBLE, [2])],
        [("y", TensorProto.DOUBLE, [2])],
    )
    double.graph.input.pop()  # b becomes a constant
    double.graph.initializer.append(numpy_helper.from_array(np.ones(2), "b"))
    problems = check_onnx_for_tensorrt(double)
    assert any("DOUBLE initializer" in p and "clamping" in p for p in problems)
    assert any("graph input 'x' is DOUBLE" in p for p in problems)


def test_int64_is_not_a_problem_in_tensorrt_10() -> None:
    model = single_node(
        "Reshape", [("x", F32, [2, 3]), ("shape", TensorProto.INT64, [1])], [("y", F32, [6])]
    )
    model.graph.input.pop()
    model.graph.initializer.append(numpy_helper.from_array(np.array([6], np.int64), "shape"))
    onnx.checker.check_model(model)
    assert check_onnx_for_tensorrt(model) == []


def test_illegal_qdq_is_listed() -> None:
    problems = check_onnx_for_tensorrt(qdq_conv(x_zp=np.int8(5)))
    assert len(problems) == 2  # the Q and its DQ
    assert all("non-zero zero point (5)" in p for p in problems)
