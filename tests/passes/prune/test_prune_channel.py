"""PruneChannelsPass: every topology case against torch with the same channels removed.

Tolerances: float32 rtol=1e-4, atol=1e-5 (onnxruntime CPU, optimizations off).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from prune_reference import (
    F32_TOL,
    Chain,
    Concat,
    Depthwise,
    Residual,
    expand,
    export,
    randomize_bn,
    run_onnx,
    run_torch,
    sliced,
)

from passes.errors import PassOptionError
from passes.prune.channel import (
    ORIGINAL_CHANNELS_KEY,
    ChannelSummary,
    PruneChannelsPass,
    plan_channel_pruning,
    target_keep,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _prune(proto: onnx.ModelProto, ratio: float, **kw) -> tuple[ir.Model, dict[str, np.ndarray]]:
    """Plan + apply; returns the pruned model and the kept channels per source node."""
    model = ir.from_proto(proto)
    plan = plan_channel_pruning(model, ratio, **kw)
    kept = plan.kept()
    assert plan.apply()
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    return model, kept


def _groups(summary: ChannelSummary) -> dict[tuple[str, ...], dict]:
    return {tuple(sorted(g["sources"])): g for g in summary.as_dict()["groups"]}


def test_chain_with_flatten_to_gemm():
    torch.manual_seed(0)
    net = randomize_bn(Chain())
    x = _x(2, 3, 8, 8)
    model, kept = _prune(export(net, x[:1]), 0.5)
    k1, k2, k3 = kept["/c1/Conv"], kept["/c2/Conv"], kept["/fc1/Gemm"]
    assert (len(k1), len(k2), len(k3)) == (4, 6, 8)
    assert "/fc2/Gemm" not in kept  # its output is the graph output
    ref = sliced(
        net,
        out={"c1": k1, "b1": k1, "c2": k2, "b2": k2, "fc1": k3},
        inp={"c2": k1, "fc1": expand(k2, 16), "fc2": k3},
    )
    np.testing.assert_allclose(run_onnx(model, x), run_torch(ref, x), **F32_TOL)
    # Flatten→Gemm: the Gemm's B lost whole 4x4 blocks
    gemm_b = next(n for n in model.graph if n.name == "/fc1/Gemm").inputs[1]
    assert gemm_b.const_value.shape == (8, 6 * 16)


def test_batchnorm_unfolded():
    torch.manual_seed(1)
    net = randomize_bn(Chain())
    x = _x(2, 3, 8, 8)
    proto = export(net, x[:1], keep_batchnorm=True)
    assert sum(n.op_type == "BatchNormalization" for n in proto.graph.node) == 2
    model, kept = _prune(proto, 0.25)
    k1, k2, k3 = kept["/c1/Conv"], kept["/c2/Conv"], kept["/fc1/Gemm"]
    bns = [n for n in model.graph if n.op_type == "BatchNormalization"]
    assert [n.inputs[1].const_value.shape[0] for n in bns] == [len(k1), len(k2)]
    ref = sliced(
        net,
        out={"c1": k1, "b1": k1, "c2": k2, "b2": k2, "fc1": k3},
        inp={"c2": k1, "fc1": expand(k2, 16), "fc2": k3},
    )
    np.testing.assert_allclose(run_onnx(model, x), run_torch(ref, x), **F32_TOL)


def test_residual_groups_are_pruned_together():
    torch.manual_seed(2)
    net = randomize_bn(Residual())
    x = _x(2, 3, 8, 8)
    proto = export(net, x[:1])
    groups = _groups(PruneChannelsPass(0.5)(ir.from_proto(proto)).summary)
    assert ("/b/Conv", "/stem/Conv") in groups  # identity residual: stem + b
    assert ("/main/Conv", "/proj/Conv") in groups  # projection residual
    assert groups[("/main/Conv", "/proj/Conv")]["channels_after"] == 5

    model, kept = _prune(proto, 0.5)
    assert np.array_equal(kept["/stem/Conv"], kept["/b/Conv"])
    assert np.array_equal(kept["/main/Conv"], kept["/proj/Conv"])
    ks, ka, km = kept["/stem/Conv"], kept["/a/Conv"], kept["/main/Conv"]
    ref = sliced(
        net,
        out={"stem": ks, "bs": ks, "a": ka, "ba": ka, "b": ks, "bb": ks,
             "main": km, "bm": km, "proj": km},
        inp={"a": ks, "b": ka, "main": ks, "proj": ks, "fc": km},
    )  # fmt: skip
    np.testing.assert_allclose(run_onnx(model, x), run_torch(ref, x), **F32_TOL)


def test_depthwise_follows_its_input():
    torch.manual_seed(3)
    net = randomize_bn(Depthwise())
    x = _x(2, 3, 6, 6)
    model, kept = _prune(export(net, x[:1]), 0.5)
    ke, kp = kept["/expand/Conv"], kept["/project/Conv"]
    assert "/dw/Conv" not in kept  # not a source: it follows `expand`
    dw = next(n for n in model.graph if n.name == "/dw/Conv")
    assert dw.attributes["group"].as_int() == len(ke) == 6
    assert dw.inputs[1].const_value.shape == (6, 1, 3, 3)
    ref = sliced(
        net,
        out={"expand": ke, "be": ke, "dw": ke, "bd": ke, "project": kp, "bp": kp},
        inp={"project": ke, "fc": kp},
    )
    np.testing.assert_allclose(run_onnx(model, x), run_torch(ref, x), **F32_TOL)


def test_concat_offsets_and_fixed_inputs():
    torch.manual_seed(4)
    net = Concat().eval()
    x = _x(2, 3, 6, 6)
    model, kept = _prune(export(net, x[:1]), 0.5)
    ka, kb, kc = kept["/a/Conv"], kept["/b/Conv"], kept["/c/Conv"]
    assert (len(ka), len(kb), len(kc)) == (3, 3, 4)
    # consumer positions: a's kept, the 3 input channels whole, b's kept after offset 9
    positions = np.concatenate([ka, [6, 7, 8], 9 + kb])
    c_w = next(n for n in model.graph if n.name == "/c/Conv").inputs[1].const_value
    assert c_w.shape == (4, 9, 3, 3)
    ref = sliced(net, out={"a": ka, "b": kb, "c": kc}, inp={"c": positions, "fc": kc})
    np.testing.assert_allclose(run_onnx(model, x), run_torch(ref, x), **F32_TOL)


def test_pruned_graph_keeps_shapes_consistent():
    """Recorded intermediate shapes are rewritten, so strict shape inference agrees."""
    torch.manual_seed(5)
    net = randomize_bn(Residual())
    model, _ = _prune(export(net, _x(1, 3, 8, 8)), 0.5)
    proto = ir.to_proto(model)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)


# ---------------------------------------------------------------------------
# modified semantics: ratio 0, pruning twice, a higher ratio later


def test_ratio_zero_changes_nothing():
    torch.manual_seed(0)
    proto = export(randomize_bn(Chain()), _x(1, 3, 8, 8))
    model = ir.from_proto(proto)
    before = ir.to_proto(model).SerializeToString(deterministic=True)
    result = PruneChannelsPass(0.0)(model)
    assert result.modified is False
    assert ir.to_proto(model).SerializeToString(deterministic=True) == before
    assert {g.status for g in result.summary.groups} == {"unchanged", "refused"}
    assert result.summary.channels_after == result.summary.channels_before
    assert result.summary.groups_pruned == 0


def test_same_ratio_twice_is_a_no_op_and_higher_ratio_counts_from_original():
    torch.manual_seed(0)
    net = randomize_bn(Chain(c1=8, c2=12, hidden=16))
    model = ir.from_proto(export(net, _x(1, 3, 8, 8)))
    assert PruneChannelsPass(0.5)(model).modified
    once = ir.to_proto(model).SerializeToString(deterministic=True)
    again = PruneChannelsPass(0.5)(model)
    assert again.modified is False
    assert ir.to_proto(model).SerializeToString(deterministic=True) == once
    assert {g.status for g in again.summary.groups} == {"unchanged", "refused"}
    c1 = next(n for n in model.graph if n.name == "/c1/Conv")
    assert c1.metadata_props[ORIGINAL_CHANNELS_KEY] == "8"
    # 0.75 is relative to the original 8/12/16 channels, not to the 4/6/8 left
    further = PruneChannelsPass(0.75)(model)
    assert further.modified
    after = {g["sources"][0]: g["channels_after"] for g in further.summary.as_dict()["groups"]}
    assert after["/c1/Conv"] == 2 and after["/c2/Conv"] == 3 and after["/fc1/Gemm"] == 4
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_target_keep_rounding():
    assert target_keep(64, 0.3) == 45
    assert target_keep(64, 0.3, round_to=8) == 48  # rounded up: never more than the ratio
    assert target_keep(64, 0.3, round_to=16) == 48
    assert target_keep(12, 0.5, round_to=16) == 6  # smaller than round_to: not rounded
    assert target_keep(4, 0.99) == 1  # at least one channel
    assert target_keep(8, 0.5, min_channels=6) == 6


def test_round_to_in_a_graph():
    torch.manual_seed(0)
    net = randomize_bn(Chain(c1=24, c2=12, hidden=16))
    result = PruneChannelsPass(0.5, round_to=8)(ir.from_proto(export(net, _x(1, 3, 8, 8))))
    after = {g["sources"][0]: g["channels_after"] for g in result.summary.as_dict()["groups"]}
    assert after["/c1/Conv"] == 16 and after["/c2/Conv"] == 8 and after["/fc1/Gemm"] == 8


# ---------------------------------------------------------------------------
# importance


def test_l2_and_l1_rank_by_weight_magnitude():
    torch.manual_seed(0)
    net = Chain().eval()
    with torch.no_grad():
        net.b1.weight.fill_(1.0)
        net.c1.weight.mul_(1e-3)
        net.c1.weight[[1, 5, 6, 7]] *= 1e4  # the four big filters survive
    for norm in ("l1", "l2"):
        plan = plan_channel_pruning(
            ir.from_proto(export(net, _x(1, 3, 8, 8))), 0.5, importance=norm
        )
        assert plan.kept()["/c1/Conv"].tolist() == [1, 5, 6, 7]


def test_importance_passed_in_by_node_or_weight_name():
    torch.manual_seed(0)
    proto = export(randomize_bn(Chain()), _x(1, 3, 8, 8))
    model = ir.from_proto(proto)
    w_name = next(n for n in model.graph if n.name == "/c2/Conv").inputs[1].name
    scores = {"/c1/Conv": np.arange(8.0)[::-1], w_name: np.arange(12.0)}
    plan = plan_channel_pruning(model, 0.5, importance=scores)
    assert plan.kept()["/c1/Conv"].tolist() == [0, 1, 2, 3]
    assert plan.kept()["/c2/Conv"].tolist() == [6, 7, 8, 9, 10, 11]
    fc1 = next(g for g in plan.groups if g.sources == ("/fc1/Gemm",))
    assert fc1.status == "refused" and "no importance scores" in (fc1.reason or "")


def test_importance_of_the_wrong_length_is_an_error():
    proto = export(Chain().eval(), _x(1, 3, 8, 8))
    with pytest.raises(PassOptionError, match="output channels"):
        plan_channel_pruning(ir.from_proto(proto), 0.5, importance={"/c1/Conv": np.ones(3)})


def test_bad_arguments():
    proto = export(Chain().eval(), _x(1, 3, 8, 8))
    with pytest.raises(PassOptionError, match="ratio"):
        plan_channel_pruning(ir.from_proto(proto), 1.0)
    with pytest.raises(PassOptionError, match="importance"):
        plan_channel_pruning(ir.from_proto(proto), 0.5, importance="l3")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# refusals: the graph is left exactly as it was, and the log says why


def _two_convs(kit, rng, middle: str, out_sig: str, **extra) -> onnx.ModelProto:
    text = f"""{HEADER}
    g (float[N, 3, 8, 8] x) => ({out_sig}) {{
      c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
      r = Relu (c)
      {middle}
    }}"""
    return kit.build(text, W=kit.normal(rng, 8, 3, 3, 3), B=kit.normal(rng, 8), **extra)


def test_refuses_reshape_consumer(kit, rng):
    proto = _two_convs(
        kit, rng, "y = Reshape (r, shape)", "float[N, 512] y", shape=np.array([-1, 512])
    )
    kit.assert_refused(PruneChannelsPass(0.5), proto, "channels consumed by Reshape")


def test_refuses_graph_output(kit, rng):
    proto = _two_convs(kit, rng, "y = Relu (r)", "float[N, 8, 8, 8] y")
    kit.assert_refused(PruneChannelsPass(0.5), proto, "is a graph output")


def test_refuses_softmax_over_channels(kit, rng):
    middle = """s = Softmax <axis = 1> (r)
      y = Conv (s, W2)"""
    proto = _two_convs(kit, rng, middle, "float[N, 4, 8, 8] y", W2=kit.normal(rng, 4, 8, 1, 1))
    kit.assert_refused(PruneChannelsPass(0.5), proto, "channels consumed by Softmax")


def test_refuses_grouped_conv(kit, rng):
    proto = _two_convs(
        kit, rng, "y = Conv <group = 2> (r, W2)", "float[N, 4, 6, 6] y",
        W2=kit.normal(rng, 4, 4, 3, 3),
    )  # fmt: skip
    kit.assert_refused(PruneChannelsPass(0.5), proto, "grouped Conv")


def test_refuses_shared_weight(kit, rng):
    text = f"""{HEADER}
    g (float[N, 8, 8, 8] x) => (float[N, 4, 8, 8] y) {{
      a = Conv (x, W)
      b = Relu (a)
      c = Conv (x, W)
      d = Add (b, c)
      y = Conv (d, W2)
    }}"""
    proto = kit.build(text, W=kit.normal(rng, 8, 8, 1, 1), W2=kit.normal(rng, 4, 8, 1, 1))
    kit.assert_refused(PruneChannelsPass(0.5), proto)


def test_refuses_add_of_graph_input(kit, rng):
    text = f"""{HEADER}
    g (float[N, 3, 8, 8] x, float[N, 8, 8, 8] z) => (float[N, 4, 8, 8] y) {{
      c = Conv <pads = [1, 1, 1, 1]> (x, W)
      d = Add (c, z)
      y = Conv (d, W2)
    }}"""
    proto = kit.build(text, W=kit.normal(rng, 8, 3, 3, 3), W2=kit.normal(rng, 4, 8, 1, 1))
    kit.assert_refused(PruneChannelsPass(0.5), proto, "per-channel operand")


def test_per_channel_constant_is_sliced(kit, rng):
    """Mul by a [C,1,1] constant (a scale) is sliced with the channels."""
    text = f"""{HEADER}
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {{
      c = Conv <pads = [1, 1, 1, 1]> (x, W)
      s = Mul (c, S)
      t = Add (s, T)
      y = Conv (t, W2)
    }}"""
    inits = {
        "W": kit.normal(rng, 8, 3, 3, 3), "S": kit.normal(rng, 8, 1, 1),
        "T": kit.normal(rng, 1), "W2": kit.normal(rng, 4, 8, 1, 1),
    }  # fmt: skip
    proto = kit.build(text, **inits)
    model, kept = _prune(proto, 0.5)
    (k,) = kept.values()
    x = _x(2, 3, 8, 8)
    # reference: conv, scale, shift, 1x1 conv on the kept channels only
    t = torch.from_numpy
    c = torch.nn.functional.conv2d(t(x), t(inits["W"][k]), padding=1)
    y = torch.nn.functional.conv2d(c * t(inits["S"][k]) + t(inits["T"]), t(inits["W2"][:, k]))
    np.testing.assert_allclose(run_onnx(model, x), y.numpy(), **F32_TOL)


class _GruHead(torch.nn.Module):
    """Linear → GRU over a length-1 sequence: the features leave through Unsqueeze."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 12)
        self.gru = torch.nn.GRU(12, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(torch.relu(self.fc(x)).unsqueeze(1))[0][:, -1]


def test_refuses_channels_that_leave_through_unsqueeze_into_a_gru():
    result = PruneChannelsPass(0.5)(ir.from_proto(export(_GruHead().eval(), _x(1, 8))))
    assert result.modified is False
    (group,) = result.summary.groups
    assert group.status == "refused" and "Unsqueeze" in (group.reason or "")


def test_matmul_on_3d_activations_is_not_a_source():
    """Linear on [N, T, F] exports as MatMul+Add over the last axis, not axis 1."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    result = PruneChannelsPass(0.5)(ir.from_proto(export(net.eval(), _x(1, 5, 8))))
    assert result.modified is False
    assert result.summary.groups == ()
