"""FoldReshapeChainPass: Reshape chains collapse; shape-preserving Reshapes vanish."""

from __future__ import annotations

import numpy as np
import pytest

from passes.fusion import FoldReshapeChainPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def model(kit, sig: str, body: str, **shapes: list[int]):
    inits = {k: np.array(v, dtype=np.int64) for k, v in shapes.items()}
    return kit.build(f"{HEADER}\ng {sig} {{\n{body}\n}}", **inits)


def test_collapses_a_chain(kit):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 2, 6] y)",
        "a = Reshape (x, s1)\n y = Reshape (a, s2)",
        s1=[-1, 12],
        s2=[-1, 2, 6],
    )
    out = kit.apply(FoldReshapeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Reshape"]
    assert [i.name for i in out.after.graph.initializer] == ["s2"]  # s1 is dropped
    assert out.error == 0.0


def test_collapses_a_chain_of_three_with_allowzero(kit):
    m = model(
        kit,
        "(float[2, 3, 4] x) => (float[4, 6] y)",
        "a = Reshape (x, s1)\n b = Reshape (a, s2)\n y = Reshape <allowzero = 1> (b, s3)",
        s1=[6, 4],
        s2=[24],
        s3=[4, 6],
    )
    out = kit.apply(FoldReshapeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Reshape"]


@pytest.mark.parametrize("target", [[-1, 3, 4], [0, 3, 4], [0, -1, 4], [0, 0, 0]])
def test_drops_a_noop_with_a_dynamic_batch(kit, target):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
        "r = Reshape (x, s)\n y = Relu (r)",
        s=target,
    )
    out = kit.apply(FoldReshapeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]
    assert not out.after.graph.initializer


def test_a_chain_that_ends_where_it_started_disappears(kit):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
        "r = Relu (x)\n a = Reshape (x, s1)\n b = Reshape (a, s2)\n y = Add (b, r)",
        s1=[-1, 12],
        s2=[-1, 3, 4],
    )
    out = kit.apply(FoldReshapeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu", "Add"]


@pytest.mark.parametrize(
    ("sig", "body", "shapes", "reason"),
    [
        (
            "(float[N, 3, 4] x) => (float[N, 12] y)",
            "a = Reshape (x, s1)\n y = Reshape (a, s2)",
            {"s1": [-1, 2, 6], "s2": [0, 12]},
            "copies a dim",
        ),
        (
            "(float[N, 3, 4] x) => (float[N, 2, 6] y, float[N, 12] a)",
            "a = Reshape (x, s1)\n y = Reshape (a, s2)",
            {"s1": [-1, 12], "s2": [-1, 2, 6]},
            "other users",
        ),
        (
            "(float[N, 3, 4] x, int64[3] s2) => (float[N, 2, 6] y)",
            "a = Reshape (x, s1)\n y = Reshape (a, s2)",
            {"s1": [-1, 12]},
            "not a constant",
        ),
        (
            "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
            "y = Reshape (x, s)",
            {"s": [-1, 3, 4]},
            "graph output",
        ),
        (
            "(float[N, 3, 4] x) => (float[N, 4, 3] y)",
            "y = Reshape (x, s)",
            {"s": [-1, 4, 3]},
            None,
        ),
    ],
    ids=[
        "zero-copies-intermediate",
        "intermediate-output",
        "dynamic-target",
        "input-to-output",
        "real-reshape",
    ],
)
def test_refuses(kit, sig, body, shapes, reason):
    kit.assert_refused(FoldReshapeChainPass(), model(kit, sig, body, **shapes), reason)
