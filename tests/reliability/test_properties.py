"""Property-based tests: random Conv/BN/Gemm/Add/Relu graphs through every pass.

Hypothesis draws the structure (channels, kernel, stride, padding, dilation,
groups, residual branch, head kind, optional Identity/Dropout/Transpose/Reshape
noise); numpy draws the weights from a seed hypothesis picks, with
BatchNormalization variances strictly positive. Each pass, and the whole
pipeline, must keep the function (`check_equivalent`: onnxruntime CPU,
optimizations off, float32 rtol=1e-4 atol=1e-5), produce a model onnx's full
checker accepts, and report ``modified=False`` on a second run.

Runs are deterministic (``derandomize=True``) and bounded (``max_examples``),
so the default suite stays fast and a failure reproduces.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.stages.optimize import optimize
from passes.cleanup import (
    InferShapesPass,
    RemoveDropoutPass,
    RemoveIdentityPass,
    RemoveUnusedNodesExactPass,
)
from passes.fusion import (
    FoldReshapeChainPass,
    FoldTransposeChainPass,
    FuseConvBatchNormPass,
    FuseGemmBatchNormPass,
    FuseMatMulAddPass,
)
from passes.verify import check_equivalent

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclasses.dataclass(frozen=True)
class Spec:
    batch: int | None  # None: a symbolic "N"
    c_in: int
    c_out: int
    size: int
    kernel: int
    stride: int
    pad: tuple[int, int, int, int]
    dilation: int
    depthwise: bool
    conv_bias: bool
    relu: bool
    residual: bool
    head: str  # "none" | "gemm" | "matmul"
    trans_b: bool
    head_bn: bool
    features: int
    noise: tuple[str, ...]  # Identity / Dropout / Transpose pair / Reshape chain
    epsilon: float
    seed: int


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    depthwise = draw(st.booleans())
    c_in = draw(st.integers(1, 4))
    c_out = c_in * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 6))
    kernel = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    # keep the output at least 1x1: size + pads >= dilation * (kernel - 1) + 1
    size = draw(st.integers(dilation * (kernel - 1) + 1, 9))
    return Spec(
        batch=draw(st.sampled_from([None, 1, 3])),
        c_in=c_in,
        c_out=c_out,
        size=size,
        kernel=kernel,
        stride=draw(st.integers(1, 2)),
        pad=tuple(draw(st.integers(0, kernel - 1)) for _ in range(4)),  # type: ignore[arg-type]
        dilation=dilation,
        depthwise=depthwise,
        conv_bias=draw(st.booleans()),
        relu=draw(st.booleans()),
        residual=draw(st.booleans()),
        head=draw(st.sampled_from(["none", "gemm", "matmul"])),
        trans_b=draw(st.booleans()),
        head_bn=draw(st.booleans()),
        features=draw(st.integers(1, 7)),
        noise=tuple(
            draw(
                st.lists(
                    st.sampled_from(["identity", "dropout", "transpose", "reshape"]), max_size=3
                )
            )
        ),
        epsilon=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def weights(self, *shape: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * 0.5).astype(np.float32)

    def bn(self, x: str, channels: int, epsilon: float) -> str:
        r = self.rng
        params = [
            r.uniform(0.5, 1.5, channels),
            r.standard_normal(channels),
            r.standard_normal(channels),
            r.uniform(0.05, 2.0, channels),  # variance > 0
        ]
        names = [self.const(n, p.astype(np.float32)) for n, p in zip("sbmv", params, strict=True)]
        return self.node("BatchNormalization", [x, *names], epsilon=epsilon)

    def conv_bn(self, x: str, s: Spec) -> str:
        group = s.c_in if s.depthwise else 1
        w = self.const("W", self.weights(s.c_out, s.c_in // group, s.kernel, s.kernel))
        inputs = [x, w] + ([self.const("B", self.weights(s.c_out))] if s.conv_bias else [])
        y = self.node(
            "Conv",
            inputs,
            kernel_shape=[s.kernel, s.kernel],
            strides=[s.stride, s.stride],
            pads=list(s.pad),
            dilations=[s.dilation, s.dilation],
            group=group,
        )
        return self.bn(y, s.c_out, s.epsilon)

    def noise(self, x: str, kind: str, rank: int) -> str:
        if kind == "identity":
            return self.node("Identity", [x])
        if kind == "dropout":
            return self.node("Dropout", [x])
        if kind == "transpose":
            perm = list(self.rng.permutation(rank))
            inverse = list(np.argsort(perm))
            return self.node("Transpose", [self.node("Transpose", [x], perm=perm)], perm=inverse)
        # reshape: flatten the trailing dims, then restore them (0 copies the batch)
        if rank != 4:
            return x
        flat = self.node("Reshape", [x, self.const("shape", np.array([0, -1], np.int64))])
        return flat  # the caller reshapes back (it knows the dims)


def build_model(s: Spec) -> onnx.ModelProto:
    b = _Builder(s.seed)
    x = "x"
    y = b.conv_bn(x, s)
    if s.residual:
        y = b.node("Add", [y, b.conv_bn(x, s)])
    if s.relu:
        y = b.node("Relu", [y])
    out_h = (s.size + s.pad[0] + s.pad[2] - s.dilation * (s.kernel - 1) - 1) // s.stride + 1
    out_w = (s.size + s.pad[1] + s.pad[3] - s.dilation * (s.kernel - 1) - 1) // s.stride + 1
    for kind in s.noise:
        z = b.noise(y, kind, 4)
        if kind == "reshape":
            shape = np.array([-1, s.c_out, out_h, out_w], np.int64)
            z = b.node("Reshape", [z, b.const("shape", shape)])
        y = z
    if s.head != "none":
        y = b.node("Flatten", [b.node("GlobalAveragePool", [y])])
        if s.head == "gemm":
            w = b.weights(s.features, s.c_out) if s.trans_b else b.weights(s.c_out, s.features)
            y = b.node(
                "Gemm",
                [y, b.const("G", w), b.const("C", b.weights(s.features))],
                transB=int(s.trans_b),
                alpha=float(b.rng.uniform(0.5, 2.0)),
                beta=float(b.rng.uniform(0.5, 2.0)),
            )
        else:
            mm = b.node("MatMul", [y, b.const("M", b.weights(s.c_out, s.features))])
            y = b.node("Add", [mm, b.const("A", b.weights(s.features))])
        if s.head_bn:
            y = b.bn(y, s.features, s.epsilon)
    b.nodes[-1].output[0] = "y"
    batch = s.batch if s.batch is not None else "N"
    out_shape = [batch, s.c_out, out_h, out_w] if s.head == "none" else [batch, s.features]
    graph = helper.make_graph(
        b.nodes,
        "random_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, s.c_in, s.size, s.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _bytes(model: ir.Model) -> bytes:
    return ir.to_proto(model).SerializeToString(deterministic=True)


PASSES = [
    RemoveIdentityPass,
    RemoveDropoutPass,
    RemoveUnusedNodesExactPass,
    InferShapesPass,
    FoldTransposeChainPass,
    FoldReshapeChainPass,
    FuseMatMulAddPass,
    FuseConvBatchNormPass,
    FuseGemmBatchNormPass,
]


@SETTINGS
@given(specs())
def test_each_pass_keeps_the_function(spec: Spec) -> None:
    original = build_model(spec)
    # the fusions run after cleanup's shape inference in the pipeline; give them shapes here
    shaped = onnx.shape_inference.infer_shapes(original, strict_mode=True)
    for pass_type in PASSES:
        result = pass_type()(ir.from_proto(shaped))
        after = ir.to_proto(result.model)
        onnx.checker.check_model(after, full_check=True)
        check_equivalent(original, after, seed=spec.seed % 1000)
        once = _bytes(result.model)
        assert result.modified == (once != _bytes(ir.from_proto(shaped))), pass_type.__name__
        again = pass_type()(result.model)
        assert again.modified is False, f"{pass_type.__name__} is not idempotent"
        assert _bytes(again.model) == once


@settings(SETTINGS, max_examples=40)
@given(specs())
def test_pipeline_keeps_the_function_and_folds_every_batchnorm(spec: Spec) -> None:
    original = build_model(spec)
    model, records = optimize(ir.from_proto(original))
    after = ir.to_proto(model)
    onnx.checker.check_model(after, full_check=True)
    check_equivalent(original, after, seed=spec.seed % 1000)
    ops = [n.op_type for n in after.graph.node]
    # every BN here follows a single-use Conv, Gemm or MatMul+Add: all of them fold
    assert "BatchNormalization" not in ops, ops
    assert "Identity" not in ops and "Dropout" not in ops, ops
    assert all(r.nodes_after <= r.nodes_before or r.name == "InferShapesPass" for r in records)


@pytest.mark.parametrize("seed", range(3))
def test_generator_covers_the_interesting_shapes(seed: int) -> None:
    """The generator itself: a depthwise, strided, padded residual net with a BN'd Gemm head."""
    spec = Spec(
        batch=None,
        c_in=3,
        c_out=6,
        size=7,
        kernel=3,
        stride=2,
        pad=(1, 0, 2, 1),
        dilation=1,
        depthwise=True,
        conv_bias=True,
        relu=True,
        residual=True,
        head="gemm",
        trans_b=True,
        head_bn=True,
        features=5,
        noise=("identity", "transpose", "reshape", "dropout"),
        epsilon=1e-3,
        seed=seed,
    )
    model = build_model(spec)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 and ops.count("BatchNormalization") == 3
    optimized, _ = optimize(ir.from_proto(model))
    check_equivalent(model, optimized, seed=seed)
    assert [n.op_type for n in ir.to_proto(optimized).graph.node].count("Conv") == 2
