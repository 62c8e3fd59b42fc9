"""What a target quantizes: a frozen `QuantSpec` per backend (torchao's idea).

A spec says *what* to quantize (data types, symmetry, which op inputs and outputs
get a QuantizeLinear → DequantizeLinear pair, the weight's per-channel axis); the
generic machinery in this package (plan → calibrate → insert Q/DQ) does the *how*.
Targets reference the module constants:

`CPU_SPEC` — onnxruntime's CPU execution provider. Activations uint8 asymmetric,
weights int8 symmetric per output channel, biases int32: the "U8S8" form whose
DQ → op → Q groups onnxruntime fuses into QLinearConv, QGemm, QLinearMatMul,
QLinearAdd, QLinearGlobalAveragePool, QLinearAveragePool and QLinearConcat.
A Relu or Clip right after a quantized op is absorbed into that op's output
quantization (the Q follows the activation, onnxruntime then drops the
activation because the Q's range lies inside it). Graph outputs stay float
(QGemm and friends can write float). Residual Adds that chain (MobileNetV2's
stages of three and four blocks) add in float (`float_skip`): requantizing the
stream after every Add put its rounding error on the skip path of every later
block; now only the Conv that reads the stream sees it. On MobileNetV2 (five
chained Adds) logit SQNR 21.75 → 21.91 dB on 1024 held-out crops and 21.87 →
22.13 dB on 768 validation crops; no latency cost (0.458x → 0.442x FP32,
block-paired). `reduce_range` is off: the 7-bit trick only matters on x86 CPUs
without VNNI (AVX2's vpmaddubsw saturates int16 pairs), and there PTQ's overflow
guard (`overflow.py`) measures which layers actually overflow and narrows only
those; the `x86-avx2` device profile turns it on for every layer (a board's CPU
cannot be measured from the compiling machine).

`TENSORRT_SPEC` — TensorRT explicit quantization. Symmetric int8 activations
(zero point 0) and weights, per output channel (Conv axis 0, ConvTranspose 1,
Gemm 0 with transB=1 else 1, MatMul the last axis); Q/DQ only at the inputs of
Conv/ConvTranspose/Gemm/MatMul and at the residual input of Add, following
TensorRT's "Q/DQ layer-placement recommendations" (quantize the inputs of
weighted ops, not their outputs; quantize the residual branch of a skip
connection so the Add fuses into the Conv epilogue). Biases stay float: TensorRT
quantizes them itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CPU_SPEC",
    "CPU_TRANSFORMER_SPEC",
    "TENSORRT_SPEC",
    "TENSORRT_TRANSFORMER_SPEC",
    "QuantSpec",
    "spec_by_name",
]

_INT_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class QuantSpec:
    """A backend's validated quantization recipe. Immutable; derive with `replace`.

    Attributes:
        name: short identifier recorded in the summary (``cpu``, ``tensorrt``).
        activation_dtype: ``uint8`` or ``int8`` for activation tensors.
        activation_symmetric: zero point fixed at 0 (range ±max|x|) when True.
        weight_dtype: ``int8`` (the only one the runtimes accelerate).
        weight_per_channel: one scale per output channel, else one per tensor.
        reduce_range: 7-bit weights (±63), for x86 CPUs without VNNI.
        weighted_ops: op types whose constant weight is quantized and whose
            activation inputs get Q/DQ.
        input_ops: further op types whose (non-constant) inputs get Q/DQ.
        output_ops: op types whose output gets Q/DQ (the op runs in int8 end to end).
        fused_activations: op types absorbed into the producer's output Q/DQ
            (the Q is placed after them).
        residual_add: quantize Add inputs (``"all"`` inputs, only the ``"residual"``
            one that a weighted op does not produce, or ``"none"``).
        quantize_graph_outputs: whether a graph output may be quantized.
        bias_int32: store Conv/Gemm biases as int32 with scale x_scale * w_scale.
        float_stem: the stem (the Conv reading a model input and the depthwise Convs
            right after it) computes in float with int8 weights (`plan.stem_nodes`).
        float_stem_into_max_pool: whether a stem whose output a MaxPool reads may stay
            float too (ResNet's conv → relu → max-pool stem).
        fold_float_weights: store the int8 weights of layers that compute in float
            as Cast → Mul, which onnxruntime folds at load, instead of a
            DequantizeLinear it runs on every call (`fold.py`).
        float_skip: a chain of residual Adds (an Add whose output another Add reads)
            adds in float, so the skip path carries the float sum and only the
            layers that read the stream see its quantized copy (`plan.py`, rule 2).
        activation_matmul: a MatMul of two computed tensors (attention's Q·K^T and
            P·V) is quantized too; the transformer specs keep it in float.
    """

    name: str
    activation_dtype: str = "uint8"
    activation_symmetric: bool = False
    weight_dtype: str = "int8"
    weight_per_channel: bool = True
    reduce_range: bool = False
    weighted_ops: frozenset[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
    input_ops: frozenset[str] = frozenset()
    output_ops: frozenset[str] = frozenset()
    fused_activations: frozenset[str] = frozenset()
    residual_add: str = "none"
    quantize_graph_outputs: bool = False
    bias_int32: bool = True
    float_stem: bool = True
    float_stem_into_max_pool: bool = True
    fold_float_weights: bool = False
    float_skip: bool = False
    activation_matmul: bool = True

    def __post_init__(self) -> None:
        if self.activation_dtype not in _INT_TYPES:
            raise ValueError(
                f"activation_dtype must be one of {_INT_TYPES}, got {self.activation_dtype!r}"
            )
        if self.weight_dtype != "int8":
            raise ValueError(f"weight_dtype must be 'int8', got {self.weight_dtype!r}")
        if self.residual_add not in ("all", "residual", "none"):
            raise ValueError(
                f"residual_add must be 'all', 'residual' or 'none', got {self.residual_add!r}"
            )

    @property
    def activation_qrange(self) -> tuple[int, int]:
        """Integer range of activations (symmetric int8 uses -127..127, as TensorRT does)."""
        if self.activation_dtype == "uint8":
            return (0, 255)
        return (-127, 127) if self.activation_symmetric else (-128, 127)

    @property
    def weight_qmax(self) -> int:
        return 63 if self.reduce_range else 127

    def weight_axis(self, op_type: str, *, trans_b: bool = False, rank: int = 2) -> int:
        """The output-channel axis of a weighted op's weight tensor."""
        if op_type == "Conv":
            return 0
        if op_type == "ConvTranspose":
            return 1
        if op_type == "Gemm":
            return 0 if trans_b else 1
        if op_type == "MatMul":
            return rank - 1
        raise ValueError(f"{op_type} has no weight axis rule")

    def replace(self, **changes: Any) -> QuantSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in d.items()}


CPU_SPEC = QuantSpec(
    name="cpu",
    activation_dtype="uint8",
    activation_symmetric=False,
    input_ops=frozenset({"Add", "GlobalAveragePool", "AveragePool", "Concat"}),
    output_ops=frozenset(
        {
            "Conv",
            "ConvTranspose",
            "Gemm",
            "MatMul",
            "Add",
            "GlobalAveragePool",
            "AveragePool",
            "Concat",
        }
    ),
    fused_activations=frozenset({"Relu", "Clip"}),
    residual_add="all",
    quantize_graph_outputs=False,
    bias_int32=True,
    fold_float_weights=True,
    # a float stem before a MaxPool makes onnxruntime pool in float NCHW: ResNet-18
    # (64x64) measured 1.45-1.50x all-INT8's latency with its stem float, for 0.59 dB
    float_stem_into_max_pool=False,
    # chained residual Adds add in int8: the float skip path bought 0.27 dB on MobileNetV2
    # and cost 3.5-8% of all-INT8's latency on an AVX-512 VNNI EPYC (nine float Adds, each
    # a dequantize, an add and a quantize kernel), which left edgec slower than
    # onnxruntime's plain QDQ; `float_choices="measured"` times it on the machine at hand
    float_skip=False,
)

TENSORRT_SPEC = QuantSpec(
    name="tensorrt",
    activation_dtype="int8",
    activation_symmetric=True,
    input_ops=frozenset(),
    output_ops=frozenset(),
    fused_activations=frozenset(),
    residual_add="residual",
    quantize_graph_outputs=False,
    bias_int32=False,
)

#: Transformers on onnxruntime's CPU provider (`transformer.py` says when): only the
#: weighted MatMul/Gemm (and a Conv patch embedding) run in int8, reading a quantized
#: input and writing float (MatMulIntegerToFloat, QGemm); LayerNorm, Softmax, GELU,
#: residual Adds and the attention MatMuls stay float.
CPU_TRANSFORMER_SPEC = CPU_SPEC.replace(
    name="cpu-transformer",
    input_ops=frozenset(),
    output_ops=frozenset({"Conv"}),
    fused_activations=frozenset(),
    residual_add="none",
    float_skip=False,
    activation_matmul=False,
)

#: Transformers on TensorRT: the weighted ops' inputs only, attention MatMuls float.
TENSORRT_TRANSFORMER_SPEC = TENSORRT_SPEC.replace(
    name="tensorrt-transformer", residual_add="none", activation_matmul=False
)

_BY_NAME = {
    s.name: s for s in (CPU_SPEC, TENSORRT_SPEC, CPU_TRANSFORMER_SPEC, TENSORRT_TRANSFORMER_SPEC)
}


def spec_by_name(name: str) -> QuantSpec:
    """The spec called `name` (``cpu`` or ``tensorrt``); KeyError lists the known ones."""
    if name not in _BY_NAME:
        raise KeyError(f"no quantization spec for {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name]
