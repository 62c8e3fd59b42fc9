"""Recovery fine-tuning for torch sources: prune channels in torch, train, export.

The channels are chosen by the *ONNX* planner (`channel.plan_channel_pruning`)
on an export of the module, so torch and the graph pass agree on groups
(residual Adds, depthwise chains, Concat offsets, Flatten→Linear blocks) and on
importance.  The caller exports the module as the compiler will (eval mode,
BatchNorm folded: `compiler.stages.prune.export_for_planning`) and passes that
graph in; this module does no exporting of its own.  In torch the plan is
applied as permanent masks on the weights:

  * every consumer layer (Conv group=1 / Linear reading pruned channels) has the
    weight columns of the dropped input positions held at 0, so the dropped
    channels cannot influence anything, whatever values they carry;
  * every source layer (Conv / Linear whose output channels are dropped) has the
    dropped rows (and bias entries) held at 0, so magnitude importance sees them
    as the least important on a re-export.

Masks are re-applied after every optimizer step.  The masked module is then
*functionally identical* to the graph that `PruneChannelsPass` produces from an
export of it with `importance=result.keep_scores` (the tests check this numerically),
so the accuracy measured here in torch is the pruned artifact's accuracy.

Fine-tuning uses distillation (KL divergence between temperature-softened
logits of the unpruned teacher and the student, times T²) by default, which
needs no labels; with labels and `distill=False` it uses cross-entropy, and
with both it averages the two.

ONNX nodes are matched to torch modules by execution order (forward hooks on
Conv/Linear modules against Conv/Gemm/MatMul nodes in graph order), checked
by weight shape; a module called twice or a functional conv makes the match
fail loudly (ValueError) rather than guess.

Taylor importance (`taylor_importance`): first-order Taylor expansion of the
loss on a channel's activation a (Molchanov et al. 2017):
  score_c = mean over samples of | sum_{h,w} a[c,h,w] * dL/da[c,h,w] |,
taken at the tensor that pruning removes — the BatchNorm output when a BN
directly follows the layer, else the layer output.  The loss is cross-entropy
with the labels, or with the model's own top-1 predictions when none are given.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import nn

from passes.errors import PassOptionError
from passes.prune.channel import ChannelPlan, ChannelSummary, node_name, plan_channel_pruning

logger = logging.getLogger(__name__)

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Progress = Callable[[int, int, dict[str, float]], None]


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: Adam with a cosine schedule, distillation by default."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    distill: bool = True  # KL to the unpruned model's softened logits
    temperature: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.temperature <= 0:
            raise PassOptionError(f"invalid fine-tuning settings: {self}")


@dataclasses.dataclass
class FinetuneResult:
    """A masked, fine-tuned copy of the module and what it cost and recovered.

    Accuracies are top-1 on the evaluation set (agreement with the unpruned
    model when no labels were given): unpruned, pruned before fine-tuning, and
    after.  `keep_scores` reproduces the pruning on an export of `module`:
    `PruneChannelsPass(ratio, importance=result.keep_scores)`.
    """

    module: nn.Module
    keep_scores: dict[str, np.ndarray]
    plan_summary: ChannelSummary
    accuracy_unpruned: float
    accuracy_pruned: float
    accuracy_finetuned: float
    history: list[dict[str, float]]


def onnx_node_modules(module: nn.Module, example: torch.Tensor, model: ir.Model) -> dict[str, str]:
    """ONNX Conv/Gemm/MatMul node name → torch module name, matched by execution order."""
    order: list[str] = []
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, _LAYERS):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: order.append(name)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    weights = {n: shape for n in model.graph if (shape := _constant_weight_shape(n)) is not None}
    nodes = list(weights)
    if len(nodes) != len(order) or len(set(order)) != len(order):
        raise ValueError(
            f"cannot match {len(order)} torch Conv/Linear calls to {len(nodes)} ONNX "
            "Conv/Gemm/MatMul nodes (a module called twice, or functional layers); "
            "pass importance by ONNX node name instead"
        )
    modules = dict(module.named_modules())
    out: dict[str, str] = {}
    for node, name in zip(nodes, order, strict=True):
        w = tuple(modules[name].weight.shape)
        onnx_w = weights[node]
        linear = isinstance(modules[name], nn.Linear)
        expected = w if not linear or node.op_type == "Gemm" and _trans_b(node) else w[::-1]
        if onnx_w != expected or (linear and node.op_type == "Conv"):
            raise ValueError(
                f"ONNX node {node.name!r} (weight {onnx_w}) does not match torch module "
                f"{name!r} (weight {w}); the export reorders layers"
            )
        out[node_name(node)] = name
    return out


def _constant_weight_shape(node: ir.Node) -> tuple[object, ...] | None:
    """The shape of a Conv/Gemm/MatMul's constant weight (input 1), else None."""
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    if weight is None or weight.const_value is None:
        return None
    return tuple(weight.const_value.shape)


def _trans_b(node: ir.Node) -> bool:
    attr = node.attributes.get("transB")
    return attr is not None and attr.as_int() == 1


def _mask_point_modules(module: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """torch layer name → the BatchNorm that directly consumes its output (if any)."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # holds the tensors: ids stay unique
    follows: dict[str, str] = {}
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, _LAYERS):

            def post(mod: nn.Module, i: tuple, out: torch.Tensor, name: str = name) -> None:
                produced[id(out)] = (name, out)

            hooks.append(m.register_forward_hook(post))
        elif isinstance(m, _NORMS):

            def pre(mod: nn.Module, inputs: tuple, name: str = name) -> None:
                src = produced.get(id(inputs[0]))
                if src is not None and src[1] is inputs[0]:
                    follows[src[0]] = name

            hooks.append(m.register_forward_pre_hook(pre))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return follows


def taylor_importance(
    module: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | None = None,
    *,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """First-order Taylor channel scores per torch Conv/Linear module name (see module doc)."""
    x_all = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    example = x_all[:1]
    follows = _mask_point_modules(module, example)
    modules = dict(module.named_modules())
    watch = {
        name: modules[follows.get(name, name)]
        for name, m in modules.items()
        if isinstance(m, _LAYERS)
    }
    acts: dict[str, torch.Tensor] = {}
    scores: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in watch.items():

        def keep(mod: nn.Module, i: tuple, out: torch.Tensor, name: str = name) -> None:
            out.retain_grad()
            acts[name] = out

        hooks.append(m.register_forward_hook(keep))
    was_training = module.training
    module.eval()
    try:
        for start in range(0, len(x_all), batch_size):
            x = x_all[start : start + batch_size]
            module.zero_grad(set_to_none=True)
            logits = module(x)
            if labels is None:
                y = logits.argmax(-1).detach()
            else:
                y = torch.as_tensor(np.asarray(labels)[start : start + batch_size]).long()
            F.cross_entropy(logits, y, reduction="sum").backward()
            for name, a in acts.items():
                if a.grad is None:
                    continue
                prod = (a * a.grad).detach()
                per_sample = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(-1).abs()
                s = per_sample.sum(0)
                scores[name] = scores[name] + s if name in scores else s
            acts.clear()
    finally:
        for h in hooks:
            h.remove()
        module.zero_grad(set_to_none=True)
        module.train(was_training)
    return {name: (s / len(x_all)).double().numpy() for name, s in scores.items()}


def _masks(
    plan: ChannelPlan, node_to_module: Mapping[str, str], module: nn.Module
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, 0/1 mask) pairs that hold the dropped weights at zero."""
    modules = dict(module.named_modules())
    masks: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, dropped in plan.dropped().items():  # source rows (and bias)
        m = modules[node_to_module[name]]
        mask = torch.ones(m.weight.shape[0])
        mask[torch.as_tensor(dropped)] = 0
        masks.append((m.weight, mask.reshape(-1, *([1] * (m.weight.dim() - 1)))))
        if getattr(m, "bias", None) is not None:
            masks.append((m.bias, mask))
    for name, dropped in plan.dropped_inputs().items():  # consumer columns
        m = modules[node_to_module[name]]
        mask = torch.ones(m.weight.shape[1])
        mask[torch.as_tensor(dropped)] = 0
        masks.append((m.weight, mask.reshape(1, -1, *([1] * (m.weight.dim() - 2)))))
    return masks


def _apply_masks(masks: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for param, mask in masks:
            param.mul_(mask)


def _top1(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    module.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            correct += int(
                (module(x[s : s + batch_size]).argmax(-1) == y[s : s + batch_size]).sum()
            )
    return correct / max(len(x), 1)


def prune_and_finetune(
    module: nn.Module,
    ratio: float,
    train_inputs: np.ndarray,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray | None = None,
    *,
    graph: ir.Model,
    train_labels: np.ndarray | None = None,
    importance: Literal["l1", "l2", "taylor"] = "l1",
    round_to: int = 1,
    config: FinetuneConfig | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Prune `ratio` of each channel group of a copy of `module`, then fine-tune it.

    `graph` is `module` exported to ONNX the way the compiler exports it (the
    planner chooses the channels on it; see the module docstring).  `module`
    itself is not modified.  Distillation (the default) needs no labels;
    `train_labels` adds (or, with `config.distill=False`, replaces it by)
    cross-entropy.  `progress(epoch, epochs, {"loss": ..., "accuracy": ...})` is
    called after each epoch.
    """
    cfg = config or FinetuneConfig()
    if not cfg.distill and train_labels is None:
        raise PassOptionError("fine-tuning without distillation needs train_labels")
    teacher = copy.deepcopy(module).eval()
    student = copy.deepcopy(module).eval()
    x_train = torch.as_tensor(np.asarray(train_inputs, dtype=np.float32))
    x_eval = torch.as_tensor(np.asarray(eval_inputs, dtype=np.float32))
    with torch.no_grad():
        teacher_eval = teacher(x_eval).argmax(-1)
    y_eval = teacher_eval if eval_labels is None else torch.as_tensor(eval_labels).long()
    y_train = None if train_labels is None else torch.as_tensor(train_labels).long()

    node_to_module = onnx_node_modules(student, x_train[:1], graph)
    if importance == "taylor":
        by_module = taylor_importance(student, x_train, train_labels)
        scores: Any = {n: by_module[m] for n, m in node_to_module.items() if m in by_module}
    else:
        scores = importance
    plan = plan_channel_pruning(graph, ratio, importance=scores, round_to=round_to)
    masks = _masks(plan, node_to_module, student)
    _apply_masks(masks)

    acc_unpruned = _top1(teacher, x_eval, y_eval)
    acc_pruned = _top1(student, x_eval, y_eval)
    history = _train(student, teacher, masks, cfg, (x_train, y_train), (x_eval, y_eval), progress)
    student.eval()
    acc_final = _top1(student, x_eval, y_eval)
    logger.info(
        "prune %.0f%% + fine-tune %d epochs: accuracy %.4f → %.4f (pruned) → %.4f",
        100 * ratio,
        cfg.epochs,
        acc_unpruned,
        acc_pruned,
        acc_final,
    )
    return FinetuneResult(
        module=student,
        keep_scores=plan.keep_scores(),
        plan_summary=plan.summary(),
        accuracy_unpruned=acc_unpruned,
        accuracy_pruned=acc_pruned,
        accuracy_finetuned=acc_final,
        history=history,
    )


def _train(
    student: nn.Module,
    teacher: nn.Module,
    masks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cfg: FinetuneConfig,
    train: tuple[torch.Tensor, torch.Tensor | None],
    evaluation: tuple[torch.Tensor, torch.Tensor],
    progress: Progress | None,
) -> list[dict[str, float]]:
    """Adam with a cosine schedule, masks re-applied after every step; the per-epoch history."""
    x_train, y_train = train
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=cfg.lr)
        steps = max(1, (len(x_train) + cfg.batch_size - 1) // cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps))
        for epoch in range(cfg.epochs):
            student.train()
            order = torch.randperm(len(x_train))
            total = 0.0
            for b in range(steps):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                loss = _loss(
                    student, teacher, cfg, x_train[idx], None if y_train is None else y_train[idx]
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                _apply_masks(masks)
                total += float(loss.detach()) * len(idx)
            metrics = {"loss": total / len(x_train), "accuracy": _top1(student, *evaluation)}
            history.append({"epoch": epoch + 1, **metrics})
            if progress is not None:
                progress(epoch + 1, cfg.epochs, metrics)
    return history


def _loss(
    student: nn.Module,
    teacher: nn.Module,
    cfg: FinetuneConfig,
    x: torch.Tensor,
    y: torch.Tensor | None,
) -> torch.Tensor:
    """The mean of the distillation loss (KL to the teacher, times T²) and/or cross-entropy."""
    logits = student(x)
    losses = []
    if cfg.distill:
        with torch.no_grad():
            t_logits = teacher(x)
        t = cfg.temperature
        losses.append(
            F.kl_div(
                F.log_softmax(logits / t, -1),
                F.log_softmax(t_logits / t, -1),
                reduction="batchmean",
                log_target=True,
            )
            * t**2
        )
    if y is not None:
        losses.append(F.cross_entropy(logits, y))
    return functools.reduce(operator.add, losses) / len(losses)
