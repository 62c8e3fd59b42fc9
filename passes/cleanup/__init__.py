"""Cleanup passes: simplify a model without changing what it computes.

`cleanup_passes()` is the ordered list the pipeline runs. Most entries are onnx-ir's
common passes, reused as they are; edgec adds `SimplifyWithOnnxsimPass` and
`RemoveDropoutPass`, and wraps two onnx-ir passes whose ``modified`` is not exact in
onnx-ir 1.1: `RemoveUnusedNodesExactPass` (dead-code elimination that also reports
the attributes and optional outputs it trims) and `InferShapesPass` (shape
inference that no longer reorders initializers behind ``modified=False``, nor turns
sequence/optional values into tensors). `RemoveIdentityPass` replaces onnx-ir's
``IdentityEliminationPass``, which breaks subgraph outputs (found by the ONNX
conformance run, `compiler.conformance`).

Each was checked on torch-exported and hand-written models: no crash, the function
is preserved, and a second run reports ``modified=False``. Left out on purpose:
``AddDefaultAttributesPass`` (grows the model for nothing), ``NameFixPass``
(renames values the report and users refer to), ``RemoveInitializersFromInputsPass``
(changes the model's signature), ``ClearMetadataAndDocStringPass`` (drops the
model's own metadata), ``InlinePass`` (local functions are the exporter's choice),
``OutputFixPass``, ``CheckerPass`` (the pipeline validates separately).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from passes.cleanup.onnxsim import SimplifyWithOnnxsimPass
from passes.cleanup.remove_dropout import RemoveDropoutPass
from passes.cleanup.remove_identity import RemoveIdentityPass
from passes.cleanup.shape_inference import InferShapesPass
from passes.cleanup.unused_nodes import RemoveUnusedNodesExactPass

__all__ = [
    "InferShapesPass",
    "RemoveDropoutPass",
    "RemoveIdentityPass",
    "RemoveUnusedNodesExactPass",
    "SimplifyWithOnnxsimPass",
    "cleanup_passes",
]


def cleanup_passes(*, onnxsim: bool = True) -> list[ir.passes.PassBase]:
    """The cleanup passes, in the order to run them.

    onnxsim goes first (constant folding and shape simplification open up the rest);
    onnx-ir's passes then normalize what it left; shape inference goes last so the
    fusion passes see ranks. Pass ``onnxsim=False`` to skip onnx-simplifier.
    """
    passes: list[ir.passes.PassBase] = [SimplifyWithOnnxsimPass()] if onnxsim else []
    passes += [
        common.LiftConstantsToInitializersPass(),
        RemoveIdentityPass(),
        RemoveDropoutPass(),
        common.CommonSubexpressionEliminationPass(),
        common.DeduplicateInitializersPass(),
        RemoveUnusedNodesExactPass(),
        common.RemoveUnusedOpsetsPass(),
        common.TopologicalSortPass(),
        InferShapesPass(),
    ]
    return passes
