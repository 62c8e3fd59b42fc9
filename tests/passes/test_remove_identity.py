"""RemoveIdentityPass: Identity becomes its input, without breaking any graph's outputs.

Regression tests for the onnx-ir 1.1 IdentityEliminationPass bugs that the ONNX
conformance run found (test_scan9_sum, test_affine_grid_3d_align_corners_expanded).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_ir.passes.common import IdentityEliminationPass

from passes.cleanup import RemoveDropoutPass, RemoveIdentityPass
from passes.fusion import FoldTransposeChainPass
from passes.verify import PassChangedFunction, check_equivalent

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'

# A Scan body whose scan output is an Identity of its state output (ONNX's test_scan9_sum).
SCAN = f"""{HEADER}
g (float[2] init, float[3, 2] xs) => (float[2] final, float[3, 2] partial) {{
  final, partial = Scan <num_scan_inputs = 1, body = body (float[2] s_in, float[2] x) => (float[2] s_out, float[2] scan_out) {{
      s_out = Add (s_in, x)
      scan_out = Identity (s_out)
  }}> (init, xs)
}}"""

# A subgraph whose output is an Identity of a value of the enclosing graph.
OUTER = f"""{HEADER}
g (bool c, float[4] x) => (float[4] y) {{
  r = Relu (x)
  y = If (c) <then_branch = t () => (float[4] t_out) {{
      t_out = Identity (r)
  }}, else_branch = e () => (float[4] e_out) {{
      e_out = Neg (r)
  }}>
}}"""


def _feeds_scan() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "init": rng.standard_normal(2).astype(np.float32),
        "xs": rng.standard_normal((3, 2)).astype(np.float32),
    }


def test_removes_identity_and_keeps_output_names(kit):
    m = kit.build(
        f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) {{ r = Relu (x)\n y = Identity (r) }}"
    )
    out = kit.apply(RemoveIdentityPass(), m)
    assert kit.op_sequence(out.after) == ["Relu"]
    assert out.after.graph.node[0].output[0] == "y"


def test_keeps_identity_between_graph_input_and_output(kit):
    m = kit.build(f"{HEADER}\ng (float[N, 4] x) => (float[N, 4] y) {{ y = Identity (x) }}")
    kit.assert_refused(RemoveIdentityPass(), m, "graph output")


def test_scan_state_and_scan_output_stay_apart(kit):
    m = kit.build(SCAN)
    feeds = _feeds_scan()
    # the upstream bug this pass exists for: the two body outputs collapse into one
    broken = ir.to_proto(IdentityEliminationPass()(ir.from_proto(m)).model)
    with pytest.raises(PassChangedFunction):
        check_equivalent(m, broken, feeds=feeds)
    kit.assert_refused(RemoveIdentityPass(), m, "graph output")
    kit.apply(RemoveIdentityPass(), m, feeds=feeds)


def test_subgraph_output_of_outer_value_is_kept(kit):
    m = kit.build(OUTER)
    broken = ir.to_proto(IdentityEliminationPass()(ir.from_proto(m)).model)
    with pytest.raises(PassChangedFunction, match="cannot load"):
        check_equivalent(m, broken)  # onnxruntime refuses the upstream pass's output
    kit.assert_refused(RemoveIdentityPass(), m, "graph output")


@pytest.mark.parametrize(
    ("pass_", "op"),
    [
        (RemoveDropoutPass(), "Dropout (r)"),
        (FoldTransposeChainPass(), "Transpose <perm = [0]> (r)"),
    ],
    ids=["dropout", "transpose"],
)
def test_other_bypassing_passes_keep_subgraph_outputs_local(kit, pass_, op):
    """`graph_tools.can_bypass` refuses an outer-scope value as a subgraph's output."""
    m = kit.build(OUTER.replace("Identity (r)", op))
    kit.assert_refused(pass_, m, "graph output")
    onnx.checker.check_model(m, full_check=True)


def test_identity_inside_a_subgraph_on_a_local_value_is_removed(kit):
    m = kit.build(OUTER.replace("t_out = Identity (r)", "n = Neg (r)\n t_out = Identity (n)"))
    out = kit.apply(
        RemoveIdentityPass(), m, feeds={"c": np.array(True), "x": np.ones(4, np.float32)}
    )
    assert "Identity" not in onnx.printer.to_text(out.after.graph)
