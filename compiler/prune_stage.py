"""The pruning stage: which pruning the flags ask for, on which representation.

- `unstructured` and `2:4` prune weights on the optimized ONNX graph.
- `channel` removes channels on the ONNX graph; with `--finetune-epochs N` and a
  torch source (zoo or module:factory), the same channel plan is applied to the
  torch module, fine-tuned (labels where the data has them, otherwise
  distillation from the unpruned model), exported, and then pruned on the graph.

The channel count kept per group is rounded up to the target's preferred
multiple (16 on onnxruntime CPU, where AVX-512 convolution kernels work in
blocks of 16: measured in bench/prune_compare.py, unrounded counts gave no speedup).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from compiler.config import CompileConfig
from compiler.data import EvalSet, training_inputs
from compiler.ground.errors import UsageError
from compiler.recording import PassRecord, RecordingPass
from compiler.sources import ModelSource
from compiler.stages.optimize import optimize

Progress = Callable[[str, int, int], None]

log = logging.getLogger(__name__)

PRUNE_MODES = ("unstructured", "channel", "2:4")
CHANNEL_MULTIPLE = {"cpu": 16, "cuda": 8, "tensorrt": 8}


@dataclass
class PruneOutcome:
    """What pruning did, for the report's `pruning` section."""

    mode: str
    ratio: float | None
    summary: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "ratio": self.ratio, **self.summary, "finetune": self.finetune}


def validate(mode: str | None, ratio: float | None, finetune_epochs: int | None) -> None:
    if mode is None and ratio is None and finetune_epochs is None:
        return
    if mode is not None and mode not in PRUNE_MODES:
        raise UsageError(f"--prune-mode must be one of {', '.join(PRUNE_MODES)}")
    if mode != "2:4" and ratio is None:
        raise UsageError("--prune RATIO is required (a fraction in [0, 1), e.g. 0.3)")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise UsageError("--prune RATIO must be a fraction in [0, 1), e.g. 0.3")
    if finetune_epochs is not None and (mode or "unstructured") != "channel":
        raise UsageError("--finetune-epochs applies to --prune-mode channel")


def finetune_torch(
    module: Any,
    ratio: float,
    *,
    epochs: int,
    train_inputs: np.ndarray,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray | None,
    round_to: int,
    progress: Callable[[str, int, int], None],
) -> tuple[Any, dict[str, Any]]:
    """Prune and fine-tune a torch module; returns the masked module and the accuracy story."""
    from passes.prune.finetune import FinetuneConfig, prune_and_finetune

    result = prune_and_finetune(
        module,
        ratio,
        train_inputs,
        eval_inputs,
        eval_labels,
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
    from passes.prune import PruneChannelsPass, PruneSemiStructuredPass, PruneUnstructuredPass

    if mode == "unstructured":
        inner: Any = PruneUnstructuredPass(float(ratio or 0.0))
    elif mode == "channel":
        inner = PruneChannelsPass(float(ratio or 0.0), round_to=round_to)
    else:
        inner = PruneSemiStructuredPass()
    result = RecordingPass(inner, records)(model)
    summary = dict(inner.summary)
    return result.model, PruneOutcome(
        mode=mode, ratio=ratio if mode != "2:4" else 0.5, summary=summary
    )


def run_prune(
    config: CompileConfig,
    source: ModelSource,
    evalset: EvalSet,
    target_name: str,
    records: list[PassRecord],
    progress: Progress,
    fp32_model: ir.Model,
) -> tuple[ir.Model, Any]:
    """Prune the optimized graph (after torch fine-tuning when asked)."""
    mode = config.prune_mode or "unstructured"
    round_to = CHANNEL_MULTIPLE.get(target_name, 8)
    finetune = None
    if config.finetune_epochs:
        if source.torch_module is None or len(evalset.inputs) != 1:
            raise UsageError(
                "--finetune-epochs needs a single-input torch source (zoo name or module:factory)"
            )
        train = training_inputs(config, source)
        module, finetune = finetune_torch(
            source.torch_module,
            float(config.prune_ratio or 0.0),
            epochs=config.finetune_epochs,
            train_inputs=train,
            eval_inputs=next(iter(evalset.inputs.values())),
            eval_labels=evalset.labels,
            round_to=round_to,
            progress=progress,
        )
        from compiler.export import export_torch

        proto = export_torch(
            module,
            [next(iter(evalset.inputs.values()))[:1]],
            input_names=source.input_names,
            output_names=[o.name for o in source.proto.graph.output],
            opset=config.opset,
        )
        model, _ = optimize(ir.from_proto(proto), verify=config.verify, seed=config.seed)
    else:
        model = ir.from_proto(ir.to_proto(fp32_model))  # keep the unpruned baseline intact
    model, outcome = prune_graph(
        model, mode, config.prune_ratio, round_to=round_to, records=records
    )
    outcome.finetune = finetune
    return model, outcome
