"""Export a QAT model to ONNX in exactly the QDQ form PTQ produces.

The Q/DQ nodes are written by PTQ's own pass (`passes.quantize.qdq.InsertQdqPass`),
not by torch's exporter: the float model (BatchNorm folded, trained weights) is
exported with a ``Tap`` marker where each activation quantizer sits, the markers
are stripped, the same cleanup and fusion passes as in `prepare` run, and PTQ's
planner places Q/DQ again on that graph. Then:

- the plan must put a Q/DQ on exactly the edges that torch fake-quantized (same
  tensors, same readers, shared ranges on one quantizer), else `RuntimeError`
  (a bug: QAT trained something other than what is deployed);
- every quantizer's `range()` becomes the calibrated range of its tensor, which
  PTQ's `activation_qparams` maps back to the quantizer's own scale and zero
  point bit for bit (checked; a mismatch is copied back into torch and logged);
- InsertQdqPass stores weights as int8 initializers, round(W / s) clipped to
  ±127 with each layer's fixed per-channel scales s (its `weights` argument,
  the same numbers torch's fake quantization used) and, per the spec, biases as
  int32 with scale x_scale * s.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from passes.qat.fake_quant import ActivationQuantizer, QuantLayer
from passes.qat.graph import QUANTIZERS, cleanup, export_graph, floatified, strip_taps, tap
from passes.qat.prepare import QatModel
from passes.quantize.plan import QuantPlan, plan_quantization
from passes.quantize.qdq import InsertQdqPass, activation_params

logger = logging.getLogger(__name__)


def export_qat(qm: QatModel) -> ir.Model:
    """The QDQ ONNX model of `qm` (see the module docstring).

    `qm.module` is not modified, unless a quantizer's parameters differ from what
    PTQ's math derives from its range (never expected; then they are aligned, with
    a warning, so that torch keeps computing what the artifact computes).
    """
    roots = list(qm.quantizers)
    g = floatified(qm.module)
    for node in list(g.graph.nodes):
        if node.op == "call_module" and str(node.target).startswith(f"{QUANTIZERS}."):
            idx = str(node.target).split(".", 1)[1]
            with g.graph.inserting_before(node):
                marker = g.graph.call_function(tap, (node.args[0], idx))
            node.replace_all_uses_with(marker)
            g.graph.erase_node(node)
    g.graph.lint()
    g.recompile()
    g.delete_all_unused_submodules()
    model = export_graph(g, qm.example, qm.input_names, qm.output_names, qm.opset)
    marked_raw = strip_taps(model)
    model = cleanup(model)
    marked: dict[str, tuple[str, set[tuple[str, int]]]] = {}
    for t in marked_raw:
        name = t.value.name or ""
        root = roots[int(t.tag)]
        readers = {(n.name or "", i) for n, i in t.readers}
        prev = marked.setdefault(name, (root, set()))
        if prev[0] != root:
            raise RuntimeError(f"tensor {name!r} carries two different quantizers")
        prev[1].update(readers)

    plan = plan_quantization(model.graph, qm.spec)
    _check_placement(plan, marked)
    quantizer_of = {name: qm.quantizers[root] for name, (root, _) in marked.items()}
    ranges = {name: quantizer_of[name].range() for name in plan.activations}
    params = activation_params(plan, qm.spec, ranges)
    _sync(params, quantizer_of)
    weights = _weights(plan, qm)
    result = InsertQdqPass(qm.spec, ranges, weights=weights)(model)
    return result.model


def _weights(plan: QuantPlan, qm: QatModel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ONNX weight name → (float weight, fixed scales) of the layer that holds it.

    Layers are recognized by content: the exported initializer is the layer's
    folded float weight, bit for bit (or its transpose, for a Linear as MatMul).
    """
    by_content: dict[tuple[tuple[int, ...], bytes], tuple[QuantLayer, bool]] = {}
    for layer in {id(m): m for m in qm.module.modules() if isinstance(m, QuantLayer)}.values():
        if not layer.quantize_weight:
            continue
        w = layer.folded()[0].detach().numpy()
        by_content[(w.shape, w.tobytes())] = (layer, False)
        if w.ndim == 2:
            by_content[(w.T.shape, np.ascontiguousarray(w.T).tobytes())] = (layer, True)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for site in plan.weights:
        value = site.node.inputs[site.index]
        tensor = value.const_value if value is not None else None
        if value is None or tensor is None:
            continue
        arr = np.ascontiguousarray(tensor.numpy())
        hit = by_content.get((arr.shape, arr.tobytes()))
        if hit is None:
            raise RuntimeError(f"weight {value.name!r} of {site.node.name!r} matches no QAT layer")
        layer, transposed = hit
        if layer.weight_axis is None and site.axis is None:
            continue  # per tensor: InsertQdqPass's max|W| / qmax is what torch computes
        if (
            layer.weight_axis is None
            or site.axis is None
            or ((1 - layer.weight_axis if transposed else layer.weight_axis) != site.axis)
        ):
            raise RuntimeError(
                f"weight {value.name!r}: torch quantizes axis {layer.weight_axis}, PTQ axis {site.axis}"
            )
        out[value.name or ""] = (arr, layer.w_scale.detach().numpy().astype(np.float32))
    return out


def _check_placement(plan: QuantPlan, marked: dict[str, tuple[str, set[tuple[str, int]]]]) -> None:
    problems = []
    for name, site in plan.activations.items():
        want = {(n.name or "", i) for n, i in site.edges}
        have = marked.get(name)
        if have is None:
            problems.append(f"{name!r} is quantized by PTQ but not in torch")
        elif have[1] != want:
            problems.append(
                f"{name!r}: PTQ quantizes readers {sorted(want)}, torch {sorted(have[1])}"
            )
        else:
            root = plan.share.get(name, name)
            if root in marked and marked[root][0] != have[0]:
                problems.append(f"{name!r} shares {root!r}'s range in PTQ but not in torch")
    problems += [
        f"{n!r} is quantized in torch but not by PTQ" for n in marked if n not in plan.activations
    ]
    if problems:
        raise RuntimeError("QAT placement differs from the PTQ plan: " + "; ".join(problems[:5]))


def _sync(
    params: dict[str, tuple[np.float32, np.integer]], quantizer_of: dict[str, ActivationQuantizer]
) -> None:
    for name, (scale, zp) in params.items():
        q = quantizer_of[name]
        s = np.float32(q.effective_scale().detach().reshape(()).item())
        if s != scale or int(q.zero_point) != int(zp):
            logger.warning(
                "quantizer of %s: torch (%r, %d) differs from PTQ's (%r, %d); aligned",
                name,
                s,
                int(q.zero_point),
                scale,
                int(zp),
            )
            q.set_params(float(scale), int(zp))


__all__ = ["export_qat"]
