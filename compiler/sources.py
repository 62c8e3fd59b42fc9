"""Resolve MODEL (zoo name, .onnx path, or module:factory) into one source.

A source is the FP32 original the whole run is judged against: its ONNX graph,
the torch module when there is one (for torch-eager baselines and QAT), and
where its calibration/evaluation data come from.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from compiler.export import export_torch
from compiler.ground.errors import InvalidInput, UsageError
from compiler.ground.io import load_onnx_proto, sha256_file
from compiler.ir_version import fit_ir_version

if TYPE_CHECKING:
    from models.spec import ModelSpec

log = logging.getLogger(__name__)

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelSource:
    """The FP32 original of a run."""

    name: str
    kind: str  # "zoo" | "onnx" | "torch"
    proto: onnx.ModelProto
    sha256: str
    torch_module: object | None = None
    zoo_spec: ModelSpec | None = None  # for zoo sources

    @property
    def default_dims(self) -> dict[str, int]:
        """Sizes of the named dynamic axes the source's own data use (a zoo model's; else none)."""
        return self.zoo_spec.default_dims() if self.zoo_spec is not None else {}

    @property
    def input_names(self) -> list[str]:
        inits = {i.name for i in self.proto.graph.initializer}
        return [i.name for i in self.proto.graph.input if i.name not in inits]


def _proto_sha256(proto: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def resolve(
    model: str, *, input_shape: tuple[int, ...] | None = None, opset: int = 17
) -> ModelSource:
    """Turn the MODEL argument into a ModelSource; bad input raises InvalidInput/UsageError."""
    path = Path(model)
    if model.endswith(".onnx") or path.is_file():
        return _from_onnx(path, input_shape)
    if _FACTORY_RE.match(model):
        return _from_factory(model, input_shape, opset)
    from models.registry import get_model, model_names

    if model in model_names():
        return _from_zoo(get_model(model), input_shape, opset)
    close = difflib.get_close_matches(model, model_names(), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown model {model!r}: {hint}give a zoo name ({', '.join(model_names())}), "
        "a path to a .onnx file, or module.path:factory with --input-shape"
    )


def _from_onnx(path: Path, input_shape: tuple[int, ...] | None) -> ModelSource:
    proto = load_onnx_proto(path)
    fit_ir_version(proto, name=path.name)  # the in-memory copy; the file is only read
    if input_shape is not None:
        _apply_input_shape(proto, input_shape)
    return ModelSource(name=path.stem, kind="onnx", proto=proto, sha256=sha256_file(path))


def _apply_input_shape(proto: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """Pin the (single) graph input to `shape`, refusing a rank or fixed-dim mismatch."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UsageError(
            f"--input-shape {','.join(map(str, shape))}: the model has {len(inputs)} inputs "
            f"({names}); give NAME:DIMS for each input you shape, e.g. "
            f"--input-shape {inputs[0].name}:{','.join(map(str, shape))}"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise InvalidInput(
            f"--input-shape {','.join(map(str, shape))} has rank {len(shape)} but input "
            f"{inputs[0].name!r} has rank {len(dims)}"
        )
    for i, (d, want) in enumerate(zip(dims, shape, strict=True)):
        if d.HasField("dim_value") and d.dim_value != want and i != 0:
            raise InvalidInput(
                f"--input-shape dimension {i} is {want} but input {inputs[0].name!r} fixes it at "
                f"{d.dim_value}"
            )


def _from_zoo(spec: ModelSpec, input_shape: tuple[int, ...] | None, opset: int) -> ModelSource:
    module = spec.build()
    examples = [np.zeros(i.shape, dtype=i.dtype) for i in spec.inputs]
    if input_shape is not None:
        if len(examples) != 1:
            raise UsageError("--input-shape applies to models with exactly one input")
        examples = [np.zeros(input_shape, dtype=examples[0].dtype)]
    proto = export_torch(
        module,
        examples,
        input_names=[i.name for i in spec.inputs],
        output_names=list(spec.output_names),
        opset=opset,
        dynamic_axes={i.name: i.export_axes() for i in spec.inputs},
        expects=_declared_inputs(spec),
    )
    return ModelSource(
        name=spec.name,
        kind="zoo",
        proto=proto,
        sha256=_proto_sha256(proto),
        torch_module=module,
        zoo_spec=spec,
    )


def _declared_inputs(spec: ModelSpec) -> str:
    """ "input of shape 1,1,8,8 (any batch size), e.g. --input-shape 1,1,8,8"."""
    shapes = [f"{i.name} of shape {','.join(map(str, i.shape))}" for i in spec.inputs]
    example = ",".join(map(str, spec.inputs[0].shape))
    return f"{', '.join(shapes)} (any batch size), e.g. --input-shape {example}"


def load_factory(ref: str) -> Callable[[], object]:
    """Import `module.path:factory`; the current directory is importable, like `python -m`."""
    mod_name, fn_name = ref.split(":", 1)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"cannot import {mod_name!r} for {ref}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{mod_name} has no callable {fn_name!r}")
    return fn


def _from_factory(ref: str, input_shape: tuple[int, ...] | None, opset: int) -> ModelSource:
    if input_shape is None:
        raise UsageError(f"{ref} is a torch factory: give --input-shape, e.g. 1,3,224,224")
    import torch

    try:
        module = load_factory(ref)()
    except (UsageError, InvalidInput):
        raise
    except Exception as e:
        raise InvalidInput(f"factory {ref} failed: {type(e).__name__}: {e}") from None
    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"factory {ref} returned {type(module).__name__}, not a torch.nn.Module")
    proto = export_torch(module, [np.zeros(input_shape, dtype=np.float32)], input_names=["input"])
    return ModelSource(
        name=ref.split(":", 1)[1],
        kind="torch",
        proto=proto,
        sha256=_proto_sha256(proto),
        torch_module=module,
    )
