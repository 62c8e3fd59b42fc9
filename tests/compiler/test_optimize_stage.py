"""The optimize stage: a pass that changes the function is caught by --verify, with exit 4."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes as irp
import pytest

from compiler.ground.errors import InvalidInput
from compiler.stages import optimize as optimize_stage


class _AddBecomesSub(irp.InPlacePass):
    """A broken 'optimization': every Add silently becomes Sub."""

    def call(self, model: ir.Model) -> irp.PassResult:
        changed = False
        for node in model.graph:
            if node.op_type == "Add":
                node.op_type, changed = "Sub", True
        return irp.PassResult(model, modified=changed)


def _add_model() -> ir.Model:
    import onnx

    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] a, float[4] b) => (float[4] c) { c = Add(a, b) }"""
    )
    return ir.from_proto(proto)


def test_verify_turns_a_pass_that_changes_the_function_into_invalid_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(optimize_stage, "build_passes", lambda **_: [_AddBecomesSub()])
    with pytest.raises(InvalidInput, match="pass _AddBecomesSub changed the model's function"):
        optimize_stage.optimize(_add_model(), verify=True)
    # without --verify the broken pass goes unnoticed: that is what --verify is for
    model, records = optimize_stage.optimize(_add_model(), verify=False)
    assert [n.op_type for n in model.graph] == ["Sub"] and records[0].changed
