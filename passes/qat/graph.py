"""torch.fx plumbing for QAT: markers that survive the ONNX export, and layer wrapping.

A ``Tap`` marker (`tap(x, tag)`: identity in torch, a custom-domain ``Tap`` node
in the TorchScript export) lets the exported graph say which fx edge, or which
quantizer, each ONNX value came from: `strip_taps` removes the markers and
returns what they marked. `export_graph` exports as `compiler.export` does
(opset 17, eval, dynamic batch); `cleanup` runs the pipeline's cleanup and
fusion passes except onnxsim, which renames values and would lose the map.

`trace` (torch.fx, in-place activations turned off), `wrap_layers`
(Conv/ConvTranspose/Linear → `QuantLayer`, a following BatchNorm folded in) and
`floatified` (the float twin of a QAT module, for export) prepare the module.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx
import onnx_ir as ir
import torch
import torch.fx as fx
from torch import nn

from compiler.ground.errors import first_line
from passes.qat.fake_quant import FOLDABLE_NORMS, WEIGHTED, QuantLayer

TAP_DOMAIN = "edgec.qat"
QUANTIZERS = "qat_act"  # the GraphModule attribute holding the activation quantizers

ArgPath = tuple[Any, ...]  # ("args", i, j...) or ("kwargs", key, ...)
FxEdge = tuple[str, ArgPath]  # (consumer fx node name, where in its arguments)


class QatUnsupported(ValueError):
    """The module cannot be prepared for QAT; the message says why and what to do."""


# -- the marker op ---------------------------------------------------------------------


class _TapFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tag: str) -> torch.Tensor:  # noqa: ARG004
        return x.clone()

    @staticmethod
    def symbolic(g: Any, x: Any, tag: str) -> Any:
        out = g.op(f"{TAP_DOMAIN}::Tap", x, tag_s=tag)
        out.setType(x.type())
        return out


def tap(x: Any, tag: str) -> Any:
    """Identity in torch; a ``Tap(tag)`` node in the ONNX export (float tensors only)."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return _TapFn.apply(x, tag)
    return x


@dataclass
class Tapped:
    """A marker removed from an export: its tag, the value it marked, the (node, index) readers."""

    tag: str
    value: ir.Value
    readers: list[tuple[ir.Node, int]]


def strip_taps(model: ir.Model) -> list[Tapped]:
    """Remove every Tap node (rewiring its readers to its input); returns what they marked."""
    found: list[Tapped] = []
    for node in list(model.graph):
        if node.domain != TAP_DOMAIN:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src is None or out.is_graph_output():
            raise RuntimeError(f"unexpected marker {node.name!r} at a graph output")
        readers = [(u.node, u.idx) for u in out.uses() if u.node.domain != TAP_DOMAIN]
        found.append(Tapped(node.attributes["tag"].as_string(), src, readers))
        out.replace_all_uses_with(src)
        model.graph.remove(node, safe=True)
    model.opset_imports.pop(TAP_DOMAIN, None)
    return found


def export_graph(
    gm: nn.Module,
    example: torch.Tensor,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
) -> ir.Model:
    """TorchScript export as `compiler.export.export_torch` does it (eval, dynamic batch)."""
    buf = io.BytesIO()
    was_training = gm.training
    gm.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export_onnx(
                gm,
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={n: {0: "batch"} for n in [*input_names, *output_names]},
                do_constant_folding=True,
                custom_opsets={TAP_DOMAIN: 1},
            )
    finally:
        gm.train(was_training)
    return ir.from_proto(onnx.load_from_string(buf.getvalue()))


def _export_onnx(*args: Any, **kwargs: Any) -> None:
    try:
        torch.onnx.export(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
        first = first_line(e)
        raise QatUnsupported(f"torch could not export the QAT model to ONNX: {first}") from None


def cleanup(model: ir.Model) -> ir.Model:
    """The pipeline's cleanup and fusion passes, minus onnxsim (it renames values)."""
    from passes.cleanup import cleanup_passes
    from passes.fusion import fusion_passes

    passes = [*cleanup_passes(onnxsim=False), *fusion_passes(), *cleanup_passes(onnxsim=False)]
    return ir.passes.PassManager(passes, steps=1)(model).model


# -- fx helpers ------------------------------------------------------------------------


def tensor_edges(node: fx.Node) -> list[tuple[ArgPath, fx.Node]]:
    """Every (argument path, source node) of `node`, nested lists/tuples/dicts included."""
    out: list[tuple[ArgPath, fx.Node]] = []

    def walk(v: Any, path: ArgPath) -> None:
        if isinstance(v, fx.Node):
            out.append((path, v))
        elif isinstance(v, list | tuple):
            for i, e in enumerate(v):
                walk(e, (*path, i))
        elif isinstance(v, dict):
            for k, e in v.items():
                walk(e, (*path, k))

    for i, a in enumerate(node.args):
        walk(a, ("args", i))
    for k, a in node.kwargs.items():
        walk(a, ("kwargs", k))
    return out


def get_arg(node: fx.Node, path: ArgPath) -> Any:
    v: Any = node.args if path[0] == "args" else node.kwargs
    for k in path[1:]:
        v = v[k]
    return v


def set_arg(node: fx.Node, path: ArgPath, new: Any) -> None:
    def put(v: Any, keys: tuple[Any, ...]) -> Any:
        if not keys:
            return new
        k, rest = keys[0], keys[1:]
        if isinstance(v, dict):
            d = dict(v)
            d[k] = put(v[k], rest)
            return d
        items = list(v)
        items[k] = put(v[k], rest)
        return tuple(items) if isinstance(v, tuple) else items

    if path[0] == "args":
        node.args = put(node.args, path[1:])
    else:
        node.kwargs = put(node.kwargs, path[1:])


def _set_submodule(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def trace(module: nn.Module) -> fx.GraphModule:
    """A torch.fx trace of an eval-mode copy of `module`, with in-place activations turned off."""
    m = copy.deepcopy(module).eval()
    for sub in m.modules():
        if getattr(sub, "inplace", False) is True:
            setattr(sub, "inplace", False)  # noqa: B010 - any module with an inplace flag
    try:
        return fx.symbolic_trace(m)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        first = first_line(e)
        raise QatUnsupported(
            f"QAT needs a module torch.fx can trace, and tracing failed: {first}; "
            "make data-dependent control flow static or wrap it with torch.fx.wrap"
        ) from None


def wrap_layers(gm: fx.GraphModule) -> None:
    """Wrap Conv/ConvTranspose/Linear calls in `QuantLayer`, folding a following BatchNorm."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in calls:
            continue
        layer = gm.get_submodule(node.target)
        if not isinstance(layer, WEIGHTED) or isinstance(layer, QuantLayer):
            continue
        bn = None
        users = list(node.users)
        if (
            calls[node.target] == 1
            and not isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d)
            and len(users) == 1
            and users[0].op == "call_module"
            and calls.get(users[0].target) == 1
            and len(users[0].args) == 1
            and not users[0].kwargs
        ):
            cand = gm.get_submodule(users[0].target)
            if (
                isinstance(cand, FOLDABLE_NORMS)
                and cand.track_running_stats
                and cand.running_mean is not None
                and cand.num_features == layer.weight.shape[0]
            ):
                bn = cand
                bn_node = users[0]
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
                _set_submodule(gm, bn_node.target, nn.Identity())
        _set_submodule(gm, node.target, QuantLayer(layer, bn))
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()


def floatified(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy whose `QuantLayer`s are plain layers holding the folded float weights."""
    g = copy.deepcopy(gm)
    for name, m in list(g.named_modules()):
        if isinstance(m, QuantLayer):
            _set_submodule(g, name, m.to_float())
    g.recompile()
    return g.eval()
