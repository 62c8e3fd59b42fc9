"""summarize_engine_json on engine-inspector JSON (no TensorRT needed).

The samples are hand-written from NVIDIA's documentation, not captured from a
TensorRT run (no machine here has TensorRT): the layer object follows the
kDETAILED example of the developer guide's "Engine Inspector" section (Name,
LayerType, Inputs/Outputs with Name, Dimensions and "Format/Datatype" strings
such as "Thirty-two wide channel vectorized row major Int8 format.", "Row major
linear FP32", "Channel major FP16 format where channel % 8 == 0"), the 10.x
top level has "Bindings", and the 11.x one has "I/O Tensors" entries with
"DataType" as in "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x".
"""

from __future__ import annotations

import json

import pytest

from targets.tensorrt.engine_info import EngineSummary, summarize_engine_json, tensor_type


def _tensor(name: str, fmt: str, dims: list[int] | None = None) -> dict[str, object]:
    return {
        "Name": name,
        "Location": "Device",
        "Dimensions": dims or [1, 4, 8, 8],
        "Format/Datatype": fmt,
    }


def _layer(name: str, kind: str, inputs: list[dict], outputs: list[dict]) -> dict[str, object]:
    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": inputs,
        "Outputs": outputs,
        "TacticValue": "0x0",
    }


INT8 = "Thirty-two wide channel vectorized row major Int8 format."
FP32 = "Row major linear FP32"
FP16 = "Channel major FP16 format where channel % 8 == 0"

# A Q/DQ convolution with an fp16 tail, as TensorRT 10.x lays it out.
SAMPLE_10 = {
    "Layers": [
        _layer("x_q", "Reformat", [_tensor("x", FP32)], [_tensor("x_q", INT8)]),
        _layer(
            "conv + relu",
            "CaskConvolution",
            [_tensor("x_q", INT8)],
            [_tensor("conv_out", INT8)],
        ),
        _layer("dq", "Reformat", [_tensor("conv_out", INT8)], [_tensor("h", FP16)]),
        _layer("gemm", "CaskGemmMatrixMultiply", [_tensor("h", FP16)], [_tensor("g", FP16)]),
        _layer("to_float", "Reformat", [_tensor("g", FP16)], [_tensor("y", FP32)]),
        _layer("head", "CaskConvolution", [_tensor("y", FP32)], [_tensor("z", FP32)]),
        _layer(
            "shape math",
            "ShapeHostToDevice",
            [{"Name": "s", "Dimensions": [4], "Format/Datatype": "Int64"}],
            [{"Name": "s2", "Dimensions": [4], "Format/Datatype": "Int32"}],
        ),
    ],
    "Bindings": ["x", "z"],
}


def test_layers_are_counted_by_their_narrowest_precision() -> None:
    s = summarize_engine_json(json.dumps(SAMPLE_10))
    assert s.layers == 7 and s.detailed
    # Q (fp32 → int8) and the int8 convolution are int8; DQ (int8 → fp16) too;
    # the fp16 GEMM and the fp16 → fp32 reformat are fp16; one fp32 layer; shape math.
    assert s.by_precision == {"int8": 3, "fp16": 2, "fp32": 1, "other": 1}
    assert s.io_types == {}  # TensorRT 10.x names its bindings without types
    d = s.to_dict()
    assert d["layers"] == 7 and list(d["layers_by_precision"]) == ["fp16", "fp32", "int8", "other"]


def test_tensorrt_11_datatype_field_and_io_tensors() -> None:
    sample = {
        "Layers": [
            {
                "Name": "conv",
                "LayerType": "CaskConvolution",
                "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Row major linear"}],
                "Outputs": [{"Name": "y", "DataType": "Half", "Format": "Row major linear"}],
            },
            {
                "Name": "cast",
                "LayerType": "Cast",
                "Inputs": [{"Name": "y", "DataType": "Half"}],
                "Outputs": [{"Name": "z", "DataType": "Float"}],
            },
        ],
        "I/O Tensors": [
            {"Name": "x", "IOMode": "Input", "DataType": "Half", "Dimensions": [1, 8]},
            {"Name": "z", "IOMode": "Output", "DataType": "Float", "Dimensions": [1, 4]},
        ],
    }
    s = summarize_engine_json(json.dumps(sample))
    assert s == EngineSummary(2, {"fp16": 2}, True, {"x": "fp16", "z": "fp32"})


def test_layer_names_only_and_dynamic_shapes_are_unknown() -> None:
    names_only = summarize_engine_json(
        json.dumps({"Layers": ["conv + relu", "gemm"], "Bindings": []})
    )
    assert names_only == EngineSummary(2, {"unknown": 2}, False, {})
    na = _tensor("x", "N/A due to dynamic shapes", [-1, 8])
    dynamic = summarize_engine_json(json.dumps({"Layers": [_layer("l", "NoOp", [na], [na])]}))
    assert dynamic.by_precision == {"unknown": 1} and dynamic.detailed


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (INT8, "int8"),
        (FP32, "fp32"),
        (FP16, "fp16"),
        ("Two wide channel vectorized row major FP16 format", "fp16"),
        ("Row major linear BFloat16 format", "bf16"),
        ("Float", "fp32"),
        ("Half", "fp16"),
        ("FP8", "fp8"),
        ("UInt8", "uint8"),
        ("Bool", "bool"),
        ("N/A due to dynamic shapes", None),
    ],
)
def test_tensor_type_words(text: str, kind: str | None) -> None:
    assert tensor_type({"Format/Datatype": text}) == kind


def test_not_inspector_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        summarize_engine_json("conv + relu\ngemm")
    with pytest.raises(ValueError, match="no 'Layers' list"):
        summarize_engine_json(json.dumps({"Bindings": ["x"]}))
