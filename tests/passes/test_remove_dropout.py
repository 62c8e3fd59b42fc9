"""RemoveDropoutPass: inference Dropout becomes its input."""

from __future__ import annotations

import numpy as np
import pytest

from passes.cleanup import RemoveDropoutPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def model(kit, sig: str, body: str, header: str = HEADER):
    inits = {"ratio": np.array(0.5, dtype=np.float32), "off": np.array(False), "on": np.array(True)}
    return kit.build(
        f"{header}\ng {sig} {{\n{body}\n}}", **{k: v for k, v in inits.items() if k in body}
    )


@pytest.mark.parametrize(
    "dropout",
    ["Dropout (r)", "Dropout (r, ratio)", "Dropout (r, ratio, off)", "Dropout (r, , off)"],
)
def test_removes_inference_dropout(kit, dropout):
    m = model(
        kit, "(float[N, 4] x) => (float[N, 4] y)", f"r = Relu (x)\n d = {dropout}\n y = Sigmoid (d)"
    )
    out = kit.apply(RemoveDropoutPass(), m)
    assert kit.op_sequence(out.after) == ["Relu", "Sigmoid"]
    assert not out.after.graph.initializer  # ratio / training_mode constants dropped
    assert out.error == 0.0


def test_unused_mask_and_graph_output(kit):
    m = model(kit, "(float[N, 4] x) => (float[N, 4] y)", "r = Relu (x)\n y, mask = Dropout (r)")
    out = kit.apply(RemoveDropoutPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]
    assert out.after.graph.node[0].output[0] == "y"


def test_legacy_opset_without_training_input(kit):
    header = '<ir_version: 7, opset_import: ["" : 11]>'
    m = model(
        kit,
        "(float[N, 4] x) => (float[N, 4] y)",
        "r = Relu (x)\n d = Dropout <ratio = 0.3> (r)\n y = Sigmoid (d)",
        header,
    )
    out = kit.apply(RemoveDropoutPass(), m)
    assert kit.op_sequence(out.after) == ["Relu", "Sigmoid"]


@pytest.mark.parametrize(
    ("sig", "body", "reason"),
    [
        (
            "(float[N, 4] x, bool t) => (float[N, 4] y)",
            "r = Relu (x)\n d = Dropout (r, ratio, t)\n y = Sigmoid (d)",
            "not a constant",
        ),
        (
            "(float[N, 4] x) => (float[N, 4] y)",
            "r = Relu (x)\n d = Dropout (r, ratio, on)\n y = Sigmoid (d)",
            "training_mode is true",
        ),
        (
            "(float[N, 4] x) => (float[N, 4] y, bool[N, 4] mask)",
            "r = Relu (x)\n y, mask = Dropout (r)",
            "mask",
        ),
        (
            "(float[N, 4] x) => (float[N, 4] y)",
            "y = Dropout (x)",
            "graph output",
        ),
    ],
    ids=["training-input", "training-true", "mask-used", "input-to-output"],
)
def test_refuses(kit, sig, body, reason):
    kit.assert_refused(RemoveDropoutPass(), model(kit, sig, body), reason)
