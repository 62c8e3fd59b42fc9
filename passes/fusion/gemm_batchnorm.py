"""Fold an inference BatchNormalization into the Gemm or 2-D MatMul that feeds it.

Rewrites::

    y = BatchNormalization(Gemm(a, B, C), scale, bias, mean, var)   ->  y = Gemm(a, B', C')
    y = BatchNormalization(MatMul(a, W), scale, bias, mean, var)    ->  y = Gemm(a, W', t)

The producer's output is (M, N) and BN normalizes its axis 1, so BN is the per-column
affine map ``y[:, n] = s[n] * z[:, n] + t[n]`` with ``s = scale / sqrt(var + eps)``
and ``t = bias - mean * s``. Since ``Gemm = alpha * A' @ B' + beta * C``:

- B' = B * s[None, :] when transB=0 (B is (K, N)), B * s[:, None] when transB=1;
- C' = beta * C * s + t (C = 0 when absent), and the new Gemm has beta = 1;
- alpha, transA and transB are kept.

A MatMul is a Gemm with alpha = beta = 1, transA = transB = 0 and no C, once its
first input is known to be rank 2. Values are computed in float64 and cast back to
the weight's dtype (float, double or float16).

Refuses (graph unchanged, logged at debug level):

- the Gemm/MatMul output has other users or is a graph output;
- B/W or C is not a constant, or is used by another node (shared weights);
- a MatMul whose first input's rank is not known to be 2 (shape inference has not
  run, or rank > 2: BN's axis 1 is then not the weight's output axis);
- W not 2-D, or BN parameters that are not constant 1-D tensors of N values;
- a float16 MatMul: it would become a float16 Gemm, which onnxruntime's CPU
  provider runs on a naive path (onnxsim's docs measured ~70x slower than its
  MatMul); a float16 Gemm is already a Gemm and is folded;
- the BN is in training mode, or the model's opset is below 9 (legacy semantics).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from passes import graph_tools

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Match:
    producer: ir.Node
    bn: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    trans_b: bool
    beta: float
    scale: np.ndarray
    shift: np.ndarray


class FuseGemmBatchNormPass(ir.passes.InPlacePass):
    """Gemm → BatchNormalization (or 2-D MatMul → BN) becomes one Gemm."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset_version = graph_tools.opset(model)
        return graph_tools.rewrite_nodes(
            model,
            lambda node: self._fold(node, opset_version),
            log=logger,
            refused="not folding %s: %s",
            summary="folded %d BatchNormalization nodes into Gemm/MatMul",
        )

    def _fold(self, bn: ir.Node, opset_version: int) -> str | None:
        """Fold `bn` into its Gemm/MatMul; return None when done, a reason (or "") when not."""
        producer = graph_tools.batchnorm_producer(bn, ("Gemm", "MatMul"))
        if isinstance(producer, str):
            return producer
        is_gemm = graph_tools.is_op(producer, "Gemm")
        if not graph_tools.can_bypass(bn.outputs[0], producer.outputs[0]):
            return "the BN output is a graph output the producer's output cannot take over"
        if len(producer.inputs) < 2 or producer.inputs[0] is None:
            return "malformed producer"
        w_value = producer.inputs[1]
        c_value = producer.inputs[2] if len(producer.inputs) > 2 else None
        weight = graph_tools.constant(w_value)
        if weight is None or w_value is None:
            return "the weight is not a constant"
        if weight.dtype not in graph_tools.FLOAT_DTYPES or weight.ndim != 2:
            return "the weight is not a 2-D float tensor"
        if not graph_tools.only_used_by(w_value, producer):
            return "the weight is shared with other nodes"
        bias = (
            None
            if c_value is None
            else graph_tools.exclusive_constant(c_value, producer, "the Gemm C input")
        )
        if isinstance(bias, str):
            return bias
        if is_gemm:
            trans_b = bool(producer.attributes.get_int("transB", 0))
            beta = producer.attributes.get_float("beta", 1.0)
        else:
            shape = producer.inputs[0].shape
            if shape is None or len(shape) != 2:
                return "the MatMul input is not known to be rank 2"
            if weight.dtype not in (np.float32, np.float64):
                return "a float16 MatMul would become a float16 Gemm (slow on ORT CPU)"
            trans_b, beta = False, 1.0
        affine = graph_tools.batchnorm_affine(bn, opset_version)
        if isinstance(affine, str):
            return affine
        scale, shift = affine
        columns = weight.shape[0] if trans_b else weight.shape[1]
        if scale.shape != (columns,):
            return "BN parameters do not match the number of output columns"
        if bias is not None:
            try:
                np.broadcast_shapes(bias.shape, (columns,))
            except ValueError:
                return "the Gemm C input does not broadcast to the output columns"
        self._rewrite(_Match(producer, bn, weight, bias, trans_b, beta, scale, shift))
        return None

    def _rewrite(self, m: _Match) -> None:
        graph = m.producer.graph
        assert graph is not None
        dtype = m.weight.dtype
        column_scale = m.scale[:, None] if m.trans_b else m.scale[None, :]
        weight = (m.weight.astype(np.float64) * column_scale).astype(dtype)
        bias = m.shift
        if m.bias is not None and m.beta != 0.0:
            bias = m.beta * m.bias.astype(np.float64) * m.scale + m.shift
        old_inputs = list(m.producer.inputs[1:]) + list(m.bn.inputs[1:])
        base = m.producer.name or m.bn.outputs[0].name or "gemm"
        w_new = graph_tools.new_initializer(graph, f"{base}_weight_bn", weight)
        c_new = graph_tools.new_initializer(graph, f"{base}_bias_bn", bias.astype(dtype))
        if graph_tools.is_op(m.producer, "Gemm"):
            gemm = m.producer
            if len(gemm.inputs) < 3:
                gemm.resize_inputs(3)
            gemm.replace_input_with(1, w_new)
            gemm.replace_input_with(2, c_new)
            gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
            out = gemm.outputs[0]
        else:
            gemm = ir.node("Gemm", [m.producer.inputs[0], w_new, c_new], name=m.producer.name)
            graph.insert_before(m.producer, gemm)
            out = gemm.outputs[0]
            out.name = m.producer.outputs[0].name
            out.type = m.producer.outputs[0].type
            out.shape = m.producer.outputs[0].shape
            m.producer.outputs[0].name = None
        graph_tools.bypass(m.bn.outputs[0], out)
        graph.remove(m.bn, safe=True)
        if gemm is not m.producer:
            graph.remove(m.producer, safe=True)
        graph_tools.remove_dead(old_inputs)
