"""Pruning the real zoo models: valid graphs and the issue's size target (slow)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from prune_reference import run_onnx

from compiler.export import export_torch
from models.registry import get_model
from passes.prune.channel import PruneChannelsPass
from passes.prune.semi_structured import PruneSemiStructuredPass
from passes.prune.unstructured import PruneUnstructuredPass, compressed_size

pytestmark = pytest.mark.slow


def _zoo(name: str) -> tuple[onnx.ModelProto, np.ndarray]:
    spec = get_model(name)
    x = spec.calibration_data(2).astype(np.float32)
    return export_torch(spec.build(), [x[:1]], input_names=["input"]), x


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_channel_pruning_gives_a_valid_smaller_graph(name):
    proto, x = _zoo(name)
    model = ir.from_proto(proto)
    result = PruneChannelsPass(0.3, round_to=16)(model)
    assert result.modified
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert run_onnx(out, x).shape == (2, 1000)
    # only the classifier (the graph output) is refused
    refused = [g for g in result.summary.groups if g.status == "refused"]
    assert len(refused) == 1 and "graph output" in (refused[0].reason or "")
    assert PruneChannelsPass(0.3, round_to=16)(model).modified is False


def test_unstructured_80_shrinks_the_compressed_mobilenet_v2():
    proto, x = _zoo("mobilenet_v2")
    model = ir.from_proto(proto)
    PruneUnstructuredPass(0.8)(model)
    assert compressed_size(model) <= 0.35 * compressed_size(proto)
    assert run_onnx(model, x).shape == (2, 1000)


def test_2_4_on_resnet18():
    proto, x = _zoo("resnet18")
    model = ir.from_proto(proto)
    result = PruneSemiStructuredPass()(model)
    assert result.modified
    (reason,) = result.summary.refused.values()  # only the stem conv: 3 input channels
    assert "not a multiple of 4" in reason
    assert len(result.summary.layers) == 20 and model.metadata_props["edgec.sparsity"] == "2:4"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert run_onnx(model, x).shape == (2, 1000)
