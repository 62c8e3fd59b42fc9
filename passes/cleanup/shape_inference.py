"""Shape inference that leaves everything but shapes and types where it found it.

Rewrite: onnx's shape inference (strict mode, data propagation, as onnx-ir's
`ShapeInferencePass` runs it) fills in the shapes and types of values; on an
inference error the model is left unchanged with a warning. No node changes.

Why not onnx-ir's `ShapeInferencePass` as it is, in onnx-ir 1.1:

- it takes initializers over 1 KB out of the graph while onnx infers shapes and
  registers them again afterwards, so they move to the end of the initializer
  list — a change it does not report (``modified`` only counts shape/type
  updates), and one that makes a second run change the serialized model. This
  pass puts the initializers back in their original order, so ``modified=False``
  means the model is exactly as it was;
- it copies the inferred *element type* (``value.dtype = ...``) onto values, which
  turns a value without a declared type that holds a sequence or an optional
  (``s = SequenceConstruct(x)`` inside an If/Loop body, ``SequenceEmpty``) into a
  tensor: the model no longer loads (ONNX's ``test_if_opt``,
  ``test_sequence_map_*_expanded``). This pass copies the whole inferred type.

Nothing is refused.
"""

from __future__ import annotations

import functools
import logging

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass, _c_api_utils

logger = logging.getLogger(__name__)


def _merge(model: ir.Model, inferred_proto: onnx.ModelProto) -> bool:
    """Copy inferred shapes and (whole) types onto the model's values; True if any changed."""
    inferred_model = ir.serde.deserialize_model(inferred_proto)
    modified = False
    for graph, inferred_graph in zip(model.graphs(), inferred_model.graphs(), strict=False):
        inferred_values = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            inferred = inferred_values.get(name)
            if inferred is None:
                continue
            if inferred.shape is not None and value.shape != inferred.shape:
                value.shape = inferred.shape
                modified = True
            if inferred.type is not None and value.type != inferred.type:
                value.type = inferred.type
                modified = True
    return modified


class InferShapesPass(ShapeInferencePass):
    """onnx's shape inference, keeping initializer order and sequence/optional types."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        initializers = model.graph.initializers
        order = list(initializers.values())
        infer = functools.partial(
            onnx.shape_inference.infer_shapes,
            check_type=self.check_type,
            strict_mode=self.strict_mode,
            data_prop=self.data_prop,
        )
        try:
            inferred = _c_api_utils.call_onnx_api(infer, model)
        except Exception as e:  # noqa: BLE001 - any inference error leaves the model alone
            logger.warning(
                "shape inference failed (%s: %s); the model is left unchanged",
                type(e).__name__,
                " ".join(str(e).split())[:300],
            )
            modified = False
        else:
            modified = _merge(model, inferred)
        if list(initializers.values()) != order:
            for value in order:
                assert value.name is not None
                initializers.pop(value.name)
            for value in order:
                initializers.add(value)
        return ir.passes.PassResult(model, modified=modified)
