"""Fold an inference BatchNormalization into the Conv that feeds it.

Rewrite::

    y = BatchNormalization(Conv(x, W, b), scale, bias, mean, var)
    ->  y = Conv(x, W', b')

Math, per output channel m (the BN channel axis is the Conv output's axis 1)::

    s[m]  = scale[m] / sqrt(var[m] + epsilon)
    W'[m] = W[m] * s[m]                       (W is (M, C/group, k...))
    b'[m] = (b[m] - mean[m]) * s[m] + bias[m] (b = 0 when the Conv has no bias)

computed in float64 and cast back to W's dtype (float, double or float16). The new
weights are fresh initializers; the old W, b and BN parameters are dropped when
nothing else uses them. The Conv keeps its attributes (groups, dilations, pads...);
it takes over the BN output's name when that is a graph output.

Refuses (graph unchanged, logged at debug level):

- the Conv output has other users or is a graph output (the un-normalized value is
  still needed);
- W or b is not a constant (initializer or Constant node; initializers that are also
  graph inputs count as non-constant), or is used by another node (shared weights
  would change elsewhere);
- any BN parameter is not a constant 1-D tensor of M values;
- the BN is in training mode (``training_mode=1`` or running-statistics outputs), or
  the model's opset is below 9 (legacy ``spatial``/``is_test`` semantics);
- W is not a float, double or float16 tensor.
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
    conv: ir.Node
    bn: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    scale: np.ndarray
    shift: np.ndarray


class FuseConvBatchNormPass(ir.passes.InPlacePass):
    """Conv → BatchNormalization becomes one Conv with folded weights and bias."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset_version = graph_tools.opset(model)
        return graph_tools.rewrite_nodes(
            model,
            lambda node: self._fold(node, opset_version),
            log=logger,
            refused="not folding %s: %s",
            summary="folded %d BatchNormalization nodes into Conv",
        )

    def _fold(self, bn: ir.Node, opset_version: int) -> str | None:
        """Fold `bn` into its Conv; return None when done, a reason (or "") when not."""
        conv = graph_tools.batchnorm_producer(bn, ("Conv",))
        if isinstance(conv, str):
            return conv
        if not graph_tools.can_bypass(bn.outputs[0], conv.outputs[0]):
            return "the BN output is a graph output that the Conv output cannot take over"
        w_value = conv.inputs[1]
        b_value = conv.inputs[2] if len(conv.inputs) > 2 else None
        weight = graph_tools.constant(w_value)
        if weight is None or w_value is None:
            return "the Conv weight is not a constant"
        if weight.dtype not in graph_tools.FLOAT_DTYPES or weight.ndim < 3:
            return "the Conv weight is not a float tensor of rank >= 3"
        if not graph_tools.only_used_by(w_value, conv):
            return "the Conv weight is shared with other nodes"
        bias = (
            None
            if b_value is None
            else graph_tools.exclusive_constant(b_value, conv, "the Conv bias")
        )
        if isinstance(bias, str):
            return bias
        affine = graph_tools.batchnorm_affine(bn, opset_version)
        if isinstance(affine, str):
            return affine
        scale, shift = affine
        channels = weight.shape[0]
        if scale.shape != (channels,) or (bias is not None and bias.shape != (channels,)):
            return "BN parameters or Conv bias do not match the Conv output channels"
        self._rewrite(_Match(conv, bn, weight, bias, scale, shift))
        return None

    def _rewrite(self, m: _Match) -> None:
        graph = m.conv.graph
        assert graph is not None
        dtype = m.weight.dtype
        broadcast = (-1,) + (1,) * (m.weight.ndim - 1)
        weight = (m.weight.astype(np.float64) * m.scale.reshape(broadcast)).astype(dtype)
        bias = m.shift if m.bias is None else m.bias.astype(np.float64) * m.scale + m.shift
        old_inputs = list(m.conv.inputs[1:]) + list(m.bn.inputs[1:])
        base = m.conv.name or m.bn.outputs[0].name or "conv"
        w_new = graph_tools.new_initializer(graph, f"{base}_weight_bn", weight)
        b_new = graph_tools.new_initializer(graph, f"{base}_bias_bn", bias.astype(dtype))
        if len(m.conv.inputs) < 3:
            m.conv.resize_inputs(3)
        m.conv.replace_input_with(1, w_new)
        m.conv.replace_input_with(2, b_new)
        graph_tools.bypass(m.bn.outputs[0], m.conv.outputs[0])
        graph.remove(m.bn, safe=True)
        graph_tools.remove_dead(old_inputs)
