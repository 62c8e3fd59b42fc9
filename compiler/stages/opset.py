"""Old opsets, brought up to what a pass needs, with onnx's own version converter.

INT8 Q/DQ needs opset 13 (per-channel DequantizeLinear). Models from older exporters
(the onnx package's own `light_*` models are opset 9) are converted before
quantization; the FP32 original the run is judged against stays as it came.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
from onnx import version_converter

from compiler.ground.errors import InvalidInput

log = logging.getLogger(__name__)


def model_opset(model: ir.Model) -> int:
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))


def at_least(model: ir.Model, opset: int, *, why: str) -> ir.Model:
    """`model` itself when its opset is `opset` or newer, else a converted copy;
    a model the converter cannot bring up is refused (exit 4) with its reason."""
    have = model_opset(model)
    if have >= opset:
        return model
    try:
        converted = version_converter.convert_version(ir.to_proto(model), opset)
        onnx.checker.check_model(converted)
    except Exception as e:  # noqa: BLE001 - the converter raises many types; each means "cannot"
        reason = " ".join(str(e).split())[:200]
        raise InvalidInput(
            f"{why} needs opset {opset}; the model has opset {have} and onnx's version "
            f"converter cannot upgrade it ({type(e).__name__}: {reason})"
        ) from None
    log.warning("upgraded the model from opset %d to %d for %s", have, opset, why)
    return ir.from_proto(converted)
