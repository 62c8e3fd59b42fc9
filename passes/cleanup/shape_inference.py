"""Shape inference that leaves everything but shapes and types where it found it.

Rewrite: onnx-ir's `ShapeInferencePass`, unchanged — onnx's shape inference
(strict mode, data propagation) fills in the shapes and dtypes of values; on an
inference error the model is left unchanged with a warning. No node changes.

Why a subclass: in onnx-ir 1.1 the base pass takes initializers over 1 KB out of
the graph while onnx infers shapes and registers them again afterwards, so they
move to the end of the initializer list — a change it does not report
(``modified`` only counts shape/type updates), and one that makes a second run
change the serialized model. This subclass puts the initializers back in their
original order, so ``modified=False`` means the model is exactly as it was.
Nothing is refused.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass


class InferShapesPass(ShapeInferencePass):
    """onnx-ir's ShapeInferencePass, keeping the order of the graph's initializers."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        initializers = model.graph.initializers
        order = list(initializers.values())
        result = super().call(model)
        if list(initializers.values()) != order:
            for value in order:
                assert value.name is not None
                initializers.pop(value.name)
            for value in order:
                initializers.add(value)
        return result
