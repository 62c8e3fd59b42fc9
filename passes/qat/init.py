"""Initialize a prepared QAT model: from PTQ's full result, or from PTQ's calibration.

- `init_from_ptq` runs PTQ itself (`passes.quantize.quantize`) on the planning
  graph and reads its result back: every quantizer's scale and zero point,
  every layer's weight as the dequantized int8 values with PTQ's scales (fixed),
  its (corrected) bias, and the Clip bounds equalization moved (`apply_structure`).
  The untrained QAT model computes exactly what PTQ's artifact computes (a test
  checks it bit for bit);
- `calibrate` only sets the quantizers from a PTQ calibrator
  (`passes.quantize.calibrate`) through PTQ's range → (scale, zero point) math;
  weights keep round-to-nearest with max|W| / 127 scales.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from passes.errors import PassOptionError
from passes.graph_tools import activation_bounds
from passes.qat.prepare import QatModel
from passes.quantize.fold import int8_weight
from passes.quantize.options import PtqOptions

_PTQ_DEFAULTS = PtqOptions()


def calibrate(
    qm: QatModel,
    inputs: np.ndarray,
    options: PtqOptions = _PTQ_DEFAULTS,
    *,
    batch_size: int = 32,
) -> dict[str, tuple[float, float]]:
    """Set every quantizer from PTQ's calibration of `inputs` by `options.method` (and
    `options.percentile`), run on `options.threads`; returns the ranges used."""
    from passes.quantize.calibrate import collect_stats
    from passes.quantize.qdq import activation_params

    spec = qm.spec
    name = qm.input_names[0]
    data = np.asarray(inputs, dtype=np.float32)
    batches = ({name: data[i : i + batch_size]} for i in range(0, len(data), batch_size))
    stats = collect_stats(
        qm.graph, qm.plan.calibrated, batches, total=len(data), threads=options.threads
    )
    qmin, qmax = spec.activation_qrange
    ranges = stats.ranges(
        options.method,
        levels=qmax - qmin,
        symmetric=spec.activation_symmetric,
        percentile=options.percentile,
    )
    params = activation_params(qm.plan, spec, ranges)
    for root, q in qm.quantizers.items():
        scale, zp = params[root]
        q.set_params(float(scale), int(zp))
    return ranges


def init_from_ptq(
    qm: QatModel, inputs: np.ndarray, options: PtqOptions = _PTQ_DEFAULTS
) -> dict[str, Any]:
    """Start from PTQ's result on `inputs` (see the module docstring); returns PTQ's summary.

    PTQ runs with `options` on all of `inputs` (its `samples` becomes their count).
    What PTQ changed in the float model is read back too: weights and biases (its
    cross-layer equalization, GPTQ rounding and bias correction), and the upper
    bounds of Clips that equalization moved (the torch activation becomes a
    Hardtanh with the new bounds; see `apply_structure`).
    """
    from passes.quantize import quantize

    if any(layer.bn is not None for layer in qm.node_layers.values()):
        raise PassOptionError(
            "init_from_ptq needs BatchNorm folded into the layers (prepare_qat(fold_bn=True))"
        )
    data = np.asarray(inputs, dtype=np.float32)
    qmodel, summary = quantize(
        ir.from_proto(ir.to_proto(qm.graph)),
        {qm.input_names[0]: data},
        dataclasses.replace(options, samples=len(data)),
        spec=qm.spec,
    )
    nodes = {n.name or "": n for n in qmodel.graph}
    apply_structure(qm, _moved_bounds(qm, qmodel, nodes))
    _set_quantizers(qm, qmodel)
    _set_weights(qm, nodes)
    return summary.to_dict()


def _moved_bounds(
    qm: QatModel, qmodel: ir.Model, nodes: dict[str, ir.Node]
) -> dict[str, dict[str, list[float]]]:
    """The float-model changes PTQ made that QAT must copy (`apply_structure`'s input):
    Clip bounds equalization moved, and the quantizer intervals they bound."""
    values = {v.name: v for n in qmodel.graph for v in n.outputs}
    clips: dict[str, list[float]] = {}
    for before in qm.graph.graph:
        after = nodes.get(before.name or "")
        if before.op_type != "Clip" or after is None:
            continue
        old, new = activation_bounds(before), activation_bounds(after)
        if new is not None and new != old:
            clips[qm.node_owner[before.name or ""]] = [float(new[0]), float(new[1])]
    bounds: dict[str, list[float]] = {}
    for root, q in qm.quantizers.items():
        producer = values[root].producer() if root in values else None
        b = activation_bounds(producer) if producer is not None else None
        if b is not None and tuple(b) != q.bounds:
            bounds[root] = [float(b[0]), float(b[1])]
    return {"clips": clips, "quantizer_bounds": bounds}


def _set_quantizers(qm: QatModel, qmodel: ir.Model) -> None:
    """Every quantizer takes the scale and zero point of PTQ's QuantizeLinear of its tensor."""
    act: dict[str, tuple[float, int]] = {}
    for node in qmodel.graph:
        if node.op_type == "QuantizeLinear" and node.inputs[0] is not None:
            s, z = (_const(node.inputs[i]) for i in (1, 2))
            act[node.inputs[0].name or ""] = (float(s), int(z))
    missing = [r for r in qm.quantizers if r not in act]
    if missing:
        raise RuntimeError(
            f"PTQ did not quantize {len(missing)} tensors QAT quantizes, e.g. {missing[0]!r}"
        )
    for root, quantizer in qm.quantizers.items():
        quantizer.set_params(*act[root])


def _set_weights(qm: QatModel, nodes: dict[str, ir.Node]) -> None:
    """Each layer's weight becomes PTQ's dequantized int8 weight (PTQ's scales fixed), its
    bias PTQ's (corrected) bias."""
    for name, layer in qm.node_layers.items():
        node = nodes.get(name)
        if node is None:
            raise RuntimeError(f"PTQ's model lost node {name!r}")
        stored = int8_weight(node.inputs[1])
        if stored is None:
            raise RuntimeError(f"PTQ left the weight of {name!r} in float")
        q, scale, axis = stored
        shape = [1] * q.ndim
        if scale.ndim:
            shape[axis % q.ndim] = -1
        w = q.astype(np.float32) * scale.reshape(shape)
        torch_w = layer.layer.weight
        if tuple(w.shape) != tuple(torch_w.shape):
            w = w.T
        with torch.no_grad():
            torch_w.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        if layer.weight_axis is not None:
            layer.fix_weight_scale(torch.from_numpy(scale.astype(np.float32)))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            b_value = node.inputs[2]
            b_int = int8_weight(b_value)  # int32 bias behind a DQ or folded
            b = b_int[0].astype(np.float32) * b_int[1] if b_int is not None else _const(b_value)
            layer.ensure_bias()
            bias = layer.layer.bias
            assert bias is not None  # ensure_bias made one
            with torch.no_grad():
                bias.copy_(torch.from_numpy(b.astype(np.float32)))


def apply_structure(qm: QatModel, structure: dict[str, Any]) -> None:
    """Apply float-model changes PTQ made that torch state dicts do not carry (so a resumed
    run can redo them): ``clips`` {fx node: [lo, hi]} become `nn.Hardtanh(lo, hi)` modules
    (exported as Clip), ``quantizer_bounds`` {root: [lo, hi]} the quantizers' intervals."""
    gm = qm.module
    clips = structure.get("clips", {})
    if clips:
        if not hasattr(gm, "qat_clip"):
            gm.add_module("qat_clip", nn.ModuleDict())
        modules = gm.get_submodule("qat_clip")
        assert isinstance(modules, nn.ModuleDict)
        nodes = {n.name: n for n in gm.graph.nodes}
        for fx_name, (lo, hi) in clips.items():
            node = nodes[fx_name]
            x = node.args[0] if node.args else node.kwargs.get("input")
            modules[fx_name] = nn.Hardtanh(float(lo), float(hi))
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(f"qat_clip.{fx_name}", (x,))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    for root, (lo, hi) in structure.get("quantizer_bounds", {}).items():
        qm.quantizers[root].bounds = (float(lo), float(hi))
    qm.structure = {
        "clips": {**qm.structure.get("clips", {}), **clips},
        "quantizer_bounds": {
            **qm.structure.get("quantizer_bounds", {}),
            **structure.get("quantizer_bounds", {}),
        },
    }


def _const(value: ir.Value | None) -> np.ndarray:
    if value is None:
        raise RuntimeError("missing constant")
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        raise RuntimeError(f"{value.name!r} is not a constant")
    return tensor.numpy()
