"""Recovery fine-tuning: torch masks ≡ the pruned graph, and digits_cnn recovers."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from prune_reference import Chain, Concat, Depthwise, Residual, randomize_bn, run_onnx, run_torch
from torch import nn

from compiler.stages.prune import export_for_planning
from passes.errors import PassOptionError
from passes.prune.channel import PruneChannelsPass
from passes.prune.finetune import (
    FinetuneConfig,
    onnx_node_modules,
    prune_and_finetune,
    taylor_importance,
)

# float32 after a few hundred accumulations on both sides
TOL = {"rtol": 1e-4, "atol": 2e-5}


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _graph(net: nn.Module, x: np.ndarray) -> ir.Model:
    """`net` exported as the compiler exports it, for the planner."""
    return export_for_planning(net, torch.from_numpy(x[:1]))


@pytest.mark.parametrize(
    ("factory", "shape"),
    [(Chain, (3, 8, 8)), (Residual, (3, 8, 8)), (Depthwise, (3, 6, 6)), (Concat, (3, 6, 6))],
)
@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_masked_torch_model_equals_pruned_graph(factory, shape, importance):
    torch.manual_seed(0)
    net = randomize_bn(factory())
    x_train, x_eval = _x(64, *shape), _x(16, *shape, seed=1)
    result = prune_and_finetune(
        net,
        0.5,
        x_train,
        x_eval,
        graph=_graph(net, x_train),
        importance=importance,
        config=FinetuneConfig(epochs=1, batch_size=16),
    )
    assert result.keep_scores, "something must have been pruned"
    graph = export_for_planning(result.module, torch.from_numpy(x_eval[:1]))
    pruned = PruneChannelsPass(0.5, importance=result.keep_scores)(graph)
    assert pruned.modified
    assert pruned.summary.channels_after == result.plan_summary.channels_after
    onnx.checker.check_model(ir.to_proto(graph), full_check=True)
    np.testing.assert_allclose(run_onnx(graph, x_eval), run_torch(result.module, x_eval), **TOL)
    # the original module is untouched
    assert all(
        torch.count_nonzero(p) == p.numel() for n, p in net.named_parameters() if "weight" in n
    )


def test_node_module_matching():
    net = Residual().eval()
    example = torch.from_numpy(_x(1, 3, 8, 8))
    mapping = onnx_node_modules(net, example, export_for_planning(net, example))
    assert mapping == {
        "/stem/Conv": "stem", "/a/Conv": "a", "/b/Conv": "b", "/main/Conv": "main",
        "/proj/Conv": "proj", "/fc/Gemm": "fc",
    }  # fmt: skip


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.c(x)))


def test_node_module_matching_refuses_reused_modules():
    net = _Twice().eval()
    example = torch.from_numpy(_x(1, 4, 4, 4))
    with pytest.raises(ValueError, match="called twice"):
        onnx_node_modules(net, example, export_for_planning(net, example))


def test_taylor_scores_follow_batchnorm_and_see_dead_channels():
    torch.manual_seed(0)
    net = randomize_bn(Chain())
    with torch.no_grad():
        net.b1.weight[3] = 0.0  # channel 3 of c1 is dead after its BN
        net.b1.bias[3] = 0.0
    scores = taylor_importance(net, _x(32, 3, 8, 8))
    assert set(scores) == {"c1", "c2", "fc1", "fc2"}
    assert scores["c1"].shape == (8,) and scores["fc1"].shape == (16,)
    assert scores["c1"][3] == 0.0 and np.all(np.delete(scores["c1"], 3) > 0)


def test_labels_are_required_without_distillation():
    x = _x(4, 3, 8, 8)
    with pytest.raises(PassOptionError, match="train_labels"):
        prune_and_finetune(
            Chain(), 0.5, x, x, graph=_graph(Chain(), x), config=FinetuneConfig(distill=False)
        )


def test_bad_settings_are_option_errors():
    with pytest.raises(PassOptionError, match="fine-tuning settings"):
        FinetuneConfig(lr=0.0)


def test_digits_cnn_half_the_channels_within_one_point():
    from models.registry import get_model

    spec = get_model("digits_cnn")
    net = spec.build()
    x_train = spec.calibration_data(1000)
    x_eval, y_eval = spec.evaluation_data(spec.default_eval_samples)
    seen: list[int] = []
    result = prune_and_finetune(
        net, 0.5, x_train, x_eval, y_eval, graph=_graph(net, x_train),
        config=FinetuneConfig(epochs=15, lr=2e-3),
        progress=lambda epoch, epochs, metrics: seen.append(epoch),
    )  # fmt: skip
    assert seen == list(range(1, 16))
    assert result.plan_summary.groups_pruned == 3  # conv1, conv2, conv3 (fc is the output)
    assert result.accuracy_pruned < result.accuracy_unpruned - 0.1  # pruning alone hurts
    assert result.accuracy_finetuned >= result.accuracy_unpruned - 0.01
