"""The pruning stage: which pruning the flags ask for, on which representation.

- `unstructured` and `2:4` prune weights on the optimized ONNX graph.
- `channel` removes channels on the ONNX graph; with `--finetune-epochs N` and a
  torch source (zoo or module:factory), the same channel plan is applied to the
  torch module, fine-tuned (labels where the data has them, otherwise
  distillation from the unpruned model), exported, and then pruned on the graph.

The channel count kept per group is rounded up to the target's preferred
multiple (16 on onnxruntime CPU, where AVX-512 convolution kernels work in
blocks of 16: measured in bench/prune_compare.py, unrounded counts gave no speedup).

The pass for a mode comes from `passes.prune.prune_pass`; it is recorded in
`report.passes` like every other pass, and its result carries the summary that
becomes the report's `pruning` section (`PruneOutcome.to_dict`).  Passes run
inside `pass_errors()`, so their own errors leave the CLI as exit 2 or 4.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from compiler.config import CompileConfig
from compiler.data import EvalSet, training_inputs
from compiler.export import export_torch
from compiler.ground.errors import UsageError
from compiler.recording import PassRecord, RecordingPass
from compiler.sources import ModelSource
from compiler.stages.boundary import pass_errors
from compiler.stages.optimize import optimize
from passes.prune import PrunePassResult, PruneSummary, prune_pass

if TYPE_CHECKING:
    import torch

Progress = Callable[[str, int, int], None]

log = logging.getLogger(__name__)


@dataclass
class PruneOutcome:
    """What pruning did, for the report's `pruning` section."""

    mode: str
    ratio: float | None
    summary: PruneSummary
    finetune: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ratio": self.ratio,
            **self.summary.as_dict(),
            "finetune": self.finetune,
        }


def export_for_planning(module: torch.nn.Module, example: torch.Tensor) -> ir.Model:
    """Export as the compiler does (`export_torch`: eval, opset 17, BN folded); training mode kept."""
    was_training = module.training
    try:
        proto = export_torch(
            module,
            [example.detach().cpu().numpy()],
            input_names=["input"],
            output_names=["output"],
        )
    finally:
        module.train(was_training)
    return ir.from_proto(proto)


def finetune_torch(
    module: Any,
    ratio: float,
    *,
    epochs: int,
    train_inputs: np.ndarray,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray | None,
    round_to: int,
    progress: Progress,
) -> tuple[Any, dict[str, Any]]:
    """Prune and fine-tune a torch module; returns the masked module and the accuracy story."""
    import torch

    from passes.prune.finetune import FinetuneConfig, prune_and_finetune

    example = torch.as_tensor(np.asarray(train_inputs, dtype=np.float32))[:1]
    with pass_errors():
        result = prune_and_finetune(
            module,
            ratio,
            train_inputs,
            eval_inputs,
            eval_labels,
            graph=export_for_planning(module, example),
            round_to=round_to,
            config=FinetuneConfig(epochs=epochs),
            progress=lambda e, total, m: progress("finetune", e, total),
        )
    story = {
        "epochs": epochs,
        "metric": "top1_accuracy" if eval_labels is not None else "top1_agreement_with_unpruned",
        "accuracy_unpruned": round(result.accuracy_unpruned, 4),
        "accuracy_pruned": round(result.accuracy_pruned, 4),
        "accuracy_finetuned": round(result.accuracy_finetuned, 4),
    }
    return result.module, story


def prune_graph(
    model: ir.Model,
    mode: str,
    ratio: float | None,
    *,
    round_to: int,
    records: list[PassRecord],
) -> tuple[ir.Model, PruneOutcome]:
    """Apply the graph-level pruning pass, recorded like every other pass."""
    with pass_errors():
        inner = prune_pass(mode, float(ratio or 0.0), round_to=round_to)
        result = RecordingPass(inner, records)(model)
    if not isinstance(result, PrunePassResult):
        raise TypeError(f"{type(inner).__name__} returned no pruning summary")
    outcome = PruneOutcome(mode=mode, ratio=ratio if mode != "2:4" else 0.5, summary=result.summary)
    return result.model, outcome


def run_prune(
    config: CompileConfig,
    source: ModelSource,
    evalset: EvalSet,
    round_to: int,
    records: list[PassRecord],
    progress: Progress,
    fp32_model: ir.Model,
) -> tuple[ir.Model, PruneOutcome]:
    """Prune the optimized graph (after torch fine-tuning when asked).

    `round_to` is the channel multiple the target prefers (`Target.channel_multiple`).
    """
    mode = config.prune_mode or "unstructured"
    finetune = None
    if config.finetune_epochs:
        model, finetune = _finetuned_graph(
            config,
            source,
            evalset,
            epochs=config.finetune_epochs,
            round_to=round_to,
            progress=progress,
        )
    else:
        model = ir.from_proto(ir.to_proto(fp32_model))  # keep the unpruned baseline intact
    model, outcome = prune_graph(
        model, mode, config.prune_ratio, round_to=round_to, records=records
    )
    outcome.finetune = finetune
    return model, outcome


def _finetuned_graph(
    config: CompileConfig,
    source: ModelSource,
    evalset: EvalSet,
    *,
    epochs: int,
    round_to: int,
    progress: Progress,
) -> tuple[ir.Model, dict[str, Any]]:
    """Fine-tune the masked torch module, export and optimize it; the graph and the story."""
    if source.torch_module is None or len(evalset.inputs) != 1:
        raise UsageError(
            "--finetune-epochs needs a single-input torch source (zoo name or module:factory)"
        )
    train = training_inputs(config, source, finetune=True)
    eval_inputs = next(iter(evalset.inputs.values()))
    module, story = finetune_torch(
        source.torch_module,
        float(config.prune_ratio or 0.0),
        epochs=epochs,
        train_inputs=train,
        eval_inputs=eval_inputs,
        eval_labels=evalset.labels,
        round_to=round_to,
        progress=progress,
    )
    proto = export_torch(
        module,
        [eval_inputs[:1]],
        input_names=source.input_names,
        output_names=[o.name for o in source.proto.graph.output],
        opset=config.opset,
    )
    model, _ = optimize(ir.from_proto(proto), verify=config.verify, seed=config.seed)
    return model, story
