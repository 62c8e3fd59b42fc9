"""Warnings a run owes its reader when no budget asked: "passed" must never hide a model
the compile broke (30% channel pruning of the random-weight resnet18 gave top-1 agreement
0.031 and cosine 0.71, and the summary said "passed yes").

Without an accuracy budget, a compiled model far below its FP32 original (top-1 agreement
under 0.9 for class scores, else mean cosine under 0.99) gets a warning in the summary and
in `report.warnings`; a zoo model with random weights says so, since agreement with an
untrained model says little about a trained one.
"""

from __future__ import annotations

from compiler.evaluate import Accuracy

#: below these, without a budget, the summary warns
MIN_AGREEMENT = 0.9
MIN_COSINE = 0.99


def accuracy_warnings(accuracy: Accuracy, *, budgeted: bool) -> list[str]:
    """The warning for an unbudgeted result far below FP32 (pruning changes an fp32 run too)."""
    if budgeted:
        return []
    if accuracy.top1_agreement is not None:
        if accuracy.top1_agreement < MIN_AGREEMENT:
            return [
                f"top-1 agreement with FP32 is {accuracy.top1_agreement:.3g} (< {MIN_AGREEMENT}): "
                "the compiled model is far from the original; set --min-accuracy to fail the run"
            ]
        return []
    if accuracy.cosine < MIN_COSINE:  # NaN compares False: a NaN cosine is caught below
        return [
            f"cosine similarity to FP32 is {accuracy.cosine:.3g} (< {MIN_COSINE}): the compiled "
            "model is far from the original; set --min-accuracy to fail the run"
        ]
    if accuracy.cosine != accuracy.cosine:
        return ["the compiled model's outputs are not finite (NaN)"]
    return []


def weights_warnings(weights_source: str | None) -> list[str]:
    """A zoo model with random weights says so."""
    if weights_source and weights_source.startswith("random"):
        return [f"weights are {weights_source}: accuracy is against an untrained model"]
    return []
