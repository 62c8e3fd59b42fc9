"""Fuse a 2-D MatMul by a constant weight followed by a bias Add into one Gemm.

Rewrite::

    y = Add(MatMul(x, W), c)   (or Add(c, MatMul(x, W)))   ->  y = Gemm(x, W, c)

Math: for x of shape (M, K) and W of shape (K, N), MatMul is ``x @ W`` and Gemm with
its defaults (alpha = beta = 1, no transposes) is ``x @ W + c``, with c broadcast to
(M, N). The rewrite only accepts biases of shape (), (1,), (N,) or (1, N), which
broadcast along the last axis exactly as Add does, so the result is unchanged bit
for bit. W and c are reused as they are (they may be shared: nothing is modified).

Refuses (graph unchanged, logged at debug level):

- x's rank is not known to be 2: Gemm is 2-D only, and a MatMul on rank > 2 (or of
  unknown rank, e.g. before shape inference) would need Reshapes around the Gemm,
  which is not worth it on the runtimes we target;
- W is not a constant 2-D tensor, or c is not a constant of one of the shapes above;
- the MatMul output has other users or is a graph output;
- the dtype is not float or double (onnxruntime's CPU Gemm has no fast float16
  path: onnxsim's docs measured it ~70x slower than MatMul);
- the model's opset is below 11 (Gemm's C was mandatory and unidirectional
  broadcasting arrived in opset 7; we keep to the modern form).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)

_GEMM_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


@dataclasses.dataclass
class _Match:
    matmul: ir.Node
    add: ir.Node
    bias: ir.Value


class FuseMatMulAddPass(ir.passes.InPlacePass):
    """MatMul(x, W) + c becomes Gemm(x, W, c) for rank-2 x and constant W, c."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset_version = graph_tools.opset(model)
        return graph_tools.rewrite_nodes(
            model,
            lambda node: self._fuse(node, opset_version),
            log=logger,
            refused="not fusing %s: %s",
            summary="fused %d MatMul+Add pairs into Gemm",
        )

    def _fuse(self, add: ir.Node, opset_version: int) -> str | None:
        """Fuse `add` and its MatMul; return None when done, a reason (or "") when not."""
        if not graph_tools.is_op(add, "Add") or len(add.inputs) != 2:
            return ""
        for mm_index in (0, 1):
            value = add.inputs[mm_index]
            if value is not None and graph_tools.is_op(value.producer(), "MatMul"):
                break
        else:
            return ""
        matmul = value.producer()
        assert matmul is not None
        bias = add.inputs[1 - mm_index]
        if opset_version < 11:
            return "opset below 11"
        if not graph_tools.single_use(value):
            return "the MatMul output has other users or is a graph output"
        x, w_value = matmul.inputs[0], matmul.inputs[1]
        if x is None or x.shape is None or len(x.shape) != 2:
            return "the MatMul input is not known to be rank 2"
        weight = graph_tools.constant(w_value)
        if weight is None or weight.ndim != 2:
            return "the MatMul weight is not a constant 2-D tensor"
        if weight.dtype not in _GEMM_DTYPES:
            return "dtype is not float or double"
        c = graph_tools.constant(bias)
        if c is None or bias is None:
            return "the bias is not a constant"
        columns = weight.shape[1]
        if c.shape not in ((), (1,), (columns,), (1, columns)) or c.dtype != weight.dtype:
            return f"bias of shape {c.shape} does not broadcast along the last axis only"
        self._rewrite(_Match(matmul, add, bias))
        return None

    def _rewrite(self, m: _Match) -> None:
        graph = m.add.graph
        assert graph is not None
        gemm = ir.node("Gemm", [m.matmul.inputs[0], m.matmul.inputs[1], m.bias], name=m.matmul.name)
        graph.insert_before(m.add, gemm)
        out, old = gemm.outputs[0], m.add.outputs[0]
        out.type, out.shape = old.type, old.shape
        name = old.name
        graph_tools.bypass(old, out)
        old.name, out.name = None, name
        graph.remove([m.add, m.matmul], safe=True)
