"""What a built engine runs in: the engine inspector's JSON, summarized for the report (pure Python).

TensorRT's `IEngineInspector` (`engine.create_engine_inspector()`, then
`get_engine_information(LayerInformationFormat.JSON)`) describes the layers of
a built engine. With `ProfilingVerbosity.DETAILED` set in the builder config
each layer is an object whose tensors carry their type; otherwise (the
default, LAYER_NAMES_ONLY) the layers are bare names. The documented shape
(NVIDIA TensorRT developer guide, "Engine Inspector"; "Migrating
IEngineInspector Usage from TensorRT 10.x to 11.x"):

    {"Layers": [{"Name": ..., "LayerType": "CaskConvolution",
                 "Inputs":  [{"Name": ..., "Dimensions": [...],
                              "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
                 "Outputs": [...], ...}, ...],
     "Bindings": ["input_0", "output_0"]}                  # TensorRT 10.x
     "I/O Tensors": [{"Name": ..., "DataType": "Float", ...}]   # TensorRT 11.x, instead of Bindings

In TensorRT 11.x a tensor's data type may also come as its own "DataType"
field; this reads "DataType" when present, else the type word inside
"Format/Datatype". With dynamic shapes and no execution context, 10.x writes
"N/A due to dynamic shapes" there (the builder sets the context's shapes to
the profile's optimum before inspecting, so that does not happen for engines
edgec builds).

A layer's precision is the narrowest numeric type among its tensors (inputs,
then outputs): an int8 convolution reading int8 and writing float counts as
int8, a Quantize layer as int8, a Reformat from float to half as fp16. Layers
whose tensors are all integer/bool (shape arithmetic) count as "other", layers
without type information as "unknown".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineSummary", "summarize_engine_json", "tensor_type"]

# Type words TensorRT writes (DataType names and the format strings), lower-cased.
_TYPE_WORDS = {
    "int4": "int4",
    "fp4": "fp4",
    "int8": "int8",
    "uint8": "uint8",
    "fp8": "fp8",
    "half": "fp16",
    "fp16": "fp16",
    "float16": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "float": "fp32",
    "fp32": "fp32",
    "float32": "fp32",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}
# Narrowest first: the precision a layer computes in.
_RANK = {"int4": 0, "fp4": 0, "int8": 1, "uint8": 1, "fp8": 1, "fp16": 2, "bf16": 2, "fp32": 3}
_WORD = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class EngineSummary:
    """The engine's layer count and how many layers run in each precision."""

    layers: int
    by_precision: dict[str, int] = field(default_factory=dict)
    detailed: bool = True
    io_types: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "layers": self.layers,
            "layers_by_precision": dict(sorted(self.by_precision.items())),
            "detailed": self.detailed,
            "io_types": dict(self.io_types),
        }


def tensor_type(tensor: Mapping[str, Any]) -> str | None:
    """The numeric type of one tensor entry ("fp16", "int8", ...), or None when not stated."""
    for key in ("DataType", "Format/Datatype"):
        text = tensor.get(key)
        if isinstance(text, str):
            for word in _WORD.findall(text):
                kind = _TYPE_WORDS.get(word.lower())
                if kind is not None:
                    return kind
    return None


def _layer_precision(layer: Mapping[str, Any]) -> str:
    types = []
    for key in ("Inputs", "Outputs"):
        tensors = layer.get(key)
        if isinstance(tensors, list):
            types += [t for t in (tensor_type(x) for x in tensors if isinstance(x, Mapping)) if t]
    numeric = [t for t in types if t in _RANK]
    if numeric:
        return min(numeric, key=_RANK.__getitem__)
    return "other" if types else "unknown"


def _io_types(info: Mapping[str, Any]) -> dict[str, str]:
    """Name → type of the engine's I/O tensors, from TensorRT 11's "I/O Tensors" (10.x: none)."""
    out: dict[str, str] = {}
    tensors = info.get("I/O Tensors")
    if isinstance(tensors, list):
        for t in tensors:
            if isinstance(t, Mapping) and isinstance(t.get("Name"), str):
                kind = tensor_type(t)
                if kind:
                    out[t["Name"]] = kind
    return out


def summarize_engine_json(text: str) -> EngineSummary:
    """Summarize `IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`.

    Raises ValueError when `text` is not the inspector's JSON (no "Layers" list).
    """
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the engine inspector's output is not JSON: {e}") from None
    layers = info.get("Layers") if isinstance(info, Mapping) else None
    if not isinstance(layers, list):
        raise ValueError("the engine inspector's JSON has no 'Layers' list")
    counts: Counter[str] = Counter()
    detailed = True
    for layer in layers:
        if isinstance(layer, Mapping):
            counts[_layer_precision(layer)] += 1
        else:  # LAYER_NAMES_ONLY: a name, nothing about types
            counts["unknown"] += 1
            detailed = False
    return EngineSummary(len(layers), dict(counts), detailed, _io_types(info))
