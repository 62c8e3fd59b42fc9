"""`manifest.json` of a bundle: what the board needs to know to run the model, and to trust it.

It records the model's inputs and outputs (names, shapes with symbolic dims
as strings, numpy dtype names), how inputs are prepared (a zoo model's own
preprocessing; unknown for an ONNX file or torch factory, and it says so), the
precision, target and runtime, the edgec and onnxruntime versions that made
it, the sha256 and size of every other file in the bundle (the runner checks
them before it runs), and the report's accuracy and latency figures with the
target and machine they were measured on (the compiling machine, which is
the board only when compiling there).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from compiler.ground.io import sha256_file
from targets.profiles import DeviceProfile

__all__ = ["FORMAT", "file_entries", "io_specs", "measured_figures", "preprocessing"]

#: the manifest's own format; a runner refuses a manifest of another major version
FORMAT = "edgec-bundle/1"


def io_specs(proto: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """The graph's real inputs (initializers excluded) and outputs: name, shape, dtype."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    return {
        "inputs": [_value_spec(vi) for vi in inputs],
        "outputs": [_value_spec(vi) for vi in proto.graph.output],
    }


def _value_spec(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    tt = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name if tt.elem_type else None
    shape: list[int | str | None] | None = None
    if tt.HasField("shape"):
        shape = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        ]
    return {"name": vi.name, "shape": shape, "dtype": dtype}


def preprocessing(report: dict[str, Any]) -> dict[str, Any]:
    """How inputs are prepared: the zoo model's preprocessing function and its description,
    or `known: false` for models edgec received as files (it cannot know)."""
    model = report.get("model") or {}
    name = str(model.get("name"))
    if model.get("source") == "zoo":
        from models.registry import get_model  # torch-heavy: only for zoo models

        spec = get_model(name)
        fn = spec.preprocess or spec.tokenize
        if fn is None:
            return {
                "known": False,
                "description": f"zoo model {name} has no preprocessing function in edgec: feed "
                "arrays like its own sample data (models/, its calibration_data)",
            }
        doc = inspect.getdoc(fn) or ""
        return {
            "known": True,
            "function": f"{fn.__module__}.{fn.__qualname__}",
            "description": " ".join(doc.split("\n\n")[0].split()),
        }
    return {
        "known": False,
        "description": f"edgec received {name} as {model.get('source')}, not from its zoo, "
        "and does not know how its inputs were prepared: feed what the model was trained on",
    }


def measured_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The report's accuracy, latency, size and gates, with where they were measured."""
    keys = ("samples", "top1_agreement", "top5_agreement", "cosine", "sqnr_db", "max_abs_error")
    accuracy = report.get("accuracy") or {}
    return {
        "edgec_version": report.get("edgec_version"),
        "measured_on_target": report.get("target"),
        "note": "measured on the machine that compiled, not necessarily on this board",
        "precision": report.get("precision"),
        "accuracy": {k: accuracy.get(k) for k in (*keys, "top1_accuracy") if k in accuracy},
        "latency_ms": report.get("latency_ms"),
        "baseline": report.get("baseline"),
        "size_bytes": (report.get("artifact") or {}).get("size_bytes"),
        "gates": report.get("gates"),
        "passed": report.get("passed"),
    }


def file_entries(bundle: Path, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{relative path: {sha256, size_bytes, role}} for every file `roles` names in `bundle`."""
    return {
        name: {
            "sha256": sha256_file(bundle / name),
            "size_bytes": (bundle / name).stat().st_size,
            "role": role,
        }
        for name, role in sorted(roles.items())
    }


def device_section(profile: DeviceProfile) -> dict[str, Any]:
    """The board, as the profile describes it."""
    return profile.to_dict()
