"""FoldTransposeChainPass: Transpose chains compose into one Transpose or vanish."""

from __future__ import annotations

import pytest

from passes.fusion import FoldTransposeChainPass

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def model(kit, sig: str, body: str):
    return kit.build(f"{HEADER}\ng {sig} {{\n{body}\n}}")


def test_composes_perms(kit):
    m = model(
        kit,
        "(float[N, 3, 4, 5] x) => (float[5, N, 4, 3] y)",
        "t = Transpose <perm = [0, 2, 3, 1]> (x)\n y = Transpose <perm = [2, 0, 1, 3]> (t)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Transpose"]
    perm = out.after.graph.node[0].attribute[0].ints
    assert list(perm) == [3, 0, 2, 1]  # p[j] = p1[p2[j]]
    assert out.error == 0.0


def test_cancelling_pair_is_removed(kit):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
        "t = Transpose <perm = [2, 0, 1]> (x)\n u = Transpose <perm = [1, 2, 0]> (t)\n"
        " y = Relu (u)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]


def test_two_default_perms_cancel_without_a_shape(kit):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
        "r = Relu (x)\n t = Transpose (r)\n y = Transpose (t)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]
    assert out.after.graph.node[0].output[0] == "y"  # took over the graph output's name


def test_default_perm_takes_its_rank_from_the_other(kit):
    m = model(
        kit,
        "(float[N, 3, 4] x) => (float[N, 4, 3] y)",
        "r = Relu (x)\n t = Transpose (r)\n y = Transpose <perm = [0, 2, 1]> (t)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu", "Transpose"]


def test_chain_of_three_and_default_perm(kit):
    m = model(
        kit,
        "(float[2, 3, 4] x) => (float[2, 4, 3] y)",
        "a = Transpose (x)\n b = Transpose <perm = [1, 0, 2]> (a)\n"
        " y = Transpose <perm = [2, 1, 0]> (b)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Transpose"]


def test_identity_transpose_is_removed(kit):
    m = model(
        kit,
        "(float[N, 3] x) => (float[N, 3] y)",
        "t = Transpose <perm = [0, 1]> (x)\n y = Relu (t)",
    )
    out = kit.apply(FoldTransposeChainPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]


@pytest.mark.parametrize(
    ("sig", "body", "reason"),
    [
        (
            "(float[N, 3, 4] x) => (float[N, 3, 4] u, float[N, 4, 3] v)",
            "t = Transpose <perm = [0, 2, 1]> (x)\n u = Transpose <perm = [0, 2, 1]> (t)\n"
            " v = Relu (t)",
            "other users",
        ),
        (
            "(float[N, 3, 4] x) => (float[4, N, 3] y, float[N, 4, 3] t)",
            "t = Transpose <perm = [0, 2, 1]> (x)\n y = Transpose <perm = [1, 0, 2]> (t)",
            "other users",
        ),
        (
            "(float[N, 3] x) => (float[N, 3] y)",
            "y = Transpose <perm = [0, 1]> (x)",
            "graph output",
        ),
        (
            "(float[N, 3, 4] x) => (float[N, 3, 4] y)",
            "r = Relu (x)\n t = Transpose (r)\n y = Transpose <perm = [2, 1, 0]> (t)",
            None,
        ),
    ],
    ids=["intermediate-used", "intermediate-graph-output", "input-to-output", "control"],
)
def test_refuses(kit, sig, body, reason):
    pass_ = FoldTransposeChainPass()
    if reason is None:  # control: the same shape of graph does fold
        assert kit.apply(pass_, model(kit, sig, body)).modified
        return
    kit.assert_refused(pass_, model(kit, sig, body), reason)
