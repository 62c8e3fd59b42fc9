"""torch.nn.Module → ONNX, with a dynamic batch axis (and any other named dynamic axes).

We use torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter
needs onnxscript, which is not among our dependencies, and the TorchScript path
exports every zoo model (including the GRU) at opset 17 deterministically.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from compiler.ground.errors import InvalidInput, first_line

log = logging.getLogger(__name__)


def export_torch(
    module: object,
    example_inputs: Sequence[np.ndarray],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str] | None = None,
    opset: int = 17,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    expects: str | None = None,
) -> onnx.ModelProto:
    """Export `module` in eval mode; axis 0 of every input and output is dynamic ("batch").

    `dynamic_axes` adds named dynamic axes per input/output name (e.g. a text
    model's {"input_ids": {1: "sequence"}}), so one graph serves every length.
    `expects` says what input the model takes (a zoo model's declared shape); a
    module that rejects the example inputs gets an `InvalidInput` naming it, else
    the shape its first layer takes (`expected_input`), else torch's first line.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"expected a torch.nn.Module, got {type(module).__name__}")
    module = module.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example_inputs)
    with torch.inference_mode():
        try:
            out = module(*args)
        except Exception as e:
            shapes = ", ".join(str(tuple(a.shape)) for a in args)
            hint = expects or expected_input(module)
            log.info("torch's error for inputs of shape %s: %s", shapes, first_line(e))  # -v
            reason = f"it takes {hint}" if hint else first_line(e)
            raise InvalidInput(f"the model rejects inputs of shape {shapes}: {reason}") from None
    n_out = len(out) if isinstance(out, list | tuple) else 1
    if output_names is None or len(output_names) != n_out:
        output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    axes = {
        name: {0: "batch", **(dynamic_axes or {}).get(name, {})}
        for name in [*input_names, *output_names]
    }
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                args,
                buf,  # type: ignore[arg-type]  # torch's stub says path-only; the exporter writes file objects
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        except Exception as e:
            first = first_line(e)
            raise InvalidInput(f"torch could not export the model to ONNX: {first}") from None
    return onnx.load_from_string(buf.getvalue())


def expected_input(module: object) -> str | None:
    """What input the module's first layer takes, as a hint for --input-shape (None when its
    first weighted layer is not a Linear, ConvNd or RNN/LSTM/GRU): the first such layer in
    registration order, which is the first one called in the usual Sequential or
    __init__-ordered model."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return None
    for layer in module.modules():
        name = type(layer).__name__
        if isinstance(layer, torch.nn.Linear):
            n = layer.in_features
            return (
                f"a last dimension of {n} (its first layer is Linear({n}, {layer.out_features})), "
                f"e.g. --input-shape 1,{n}"
            )
        if isinstance(layer, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            spatial = {1: "L", 2: "H,W", 3: "D,H,W"}[len(layer.kernel_size)]
            c = layer.in_channels
            return (
                f"N,{c},{spatial} (its first layer is {name} with {c} input channels), "
                f"e.g. --input-shape 1,{c},{','.join('32' for _ in layer.kernel_size)}"
            )
        if isinstance(layer, torch.nn.RNNBase):
            n = layer.input_size
            order = "N,T" if layer.batch_first else "T,N"
            return f"{order},{n} (its first layer is {name} with input size {n})"
    return None
