"""What to ask TensorRT's builder for, decided from the ONNX model alone (no TensorRT needed).

`derive_settings(model, precision=..., batch=..., max_batch=...)` turns a model
and the user's flags into a frozen `BuilderSettings`; `build.EngineFromOnnx`
applies them. Everything here is pure Python and unit-tested without a GPU.

Precision (strongly typed networks, TensorRT 10.x and 11.x): the graph says
what every tensor is, and TensorRT builds exactly that. There are no precision
builder flags: `BuilderFlag.FP16`, `INT8` and `OBEY_PRECISION_CONSTRAINTS`
(weak typing) are deprecated since TensorRT 10.12 and removed in 11 (NVIDIA's
"Migrating from TensorRT 10.x to 11.x" guide). So:
- int8 comes from QuantizeLinear/DequantizeLinear in the graph (explicit
  quantization); `--precision int8` on a model without Q/DQ is refused, not
  calibrated here (calibrators are removed in TensorRT 11 too).
- fp16 comes from float16 tensors and casts in the graph (edgec's FP16 pass
  writes such a graph); `--precision fp16` on a graph with no float16 in it is
  refused, because TensorRT would build it in fp32.
- The Q/DQ must be what TensorRT accepts (its ONNX operator matrix:
  "`x_zero_point` must be zero"; its quantization guide: int8, activations per
  tensor, weights per output channel). `check_qdq_for_tensorrt` lists every
  violation; `derive_settings` raises InvalidInput on the first. The weight
  axis rule is `TENSORRT_SPEC.weight_axis` — the quantization spec this target
  owns — so the quantizer and this check cannot drift apart.
- TF32 (`BuilderFlag.TF32`, still in TensorRT 11) lets float32 matrix math run
  with a 10-bit mantissa; it is cleared for fp32 engines so that "fp32" means fp32.

Sparsity: the 2:4 pruning pass marks a model with
`metadata_props["edgec.sparsity"] == "2:4"`; then `SPARSE_WEIGHTS` is set and
TensorRT picks sparse kernels per layer where they win (Ampere and newer; a
device profile without sparse tensor cores drops the flag).

DLA: on a device profile with NVDLA cores (Jetson Orin NX / AGX Orin) and an
fp16 or int8 graph, the engine is built for DLA core 0 with GPU fallback
(layers DLA cannot run stay on the GPU); `use_dla=False` keeps it on the GPU.
Whether the installed TensorRT and the machine have a DLA is only known when
building (`builder.num_DLA_cores`): TensorRT 10 up to 10.7 (JetPack 6.1 ships 10.3), and
TensorRT 11.4.1+ on JetPack 7.2.2+ (AGX Orin), per NVIDIA's "Working with DLA".
NVIDIA documents DLA with strongly typed networks for 11.4.1; for 10.x the
documentation read here does not say either way. If a 10.x builder refuses,
the build fails with TensorRT's own error (exit 4) and `use_dla=False`
builds the same engine for the GPU.

Shapes: `shapes.shape_profiles` (one optimization profile; the batch axis
covers the evaluation batches; other dynamic dims from `input_shapes` or
`shape_ranges`).

`check_onnx_for_tensorrt(model)` lists what TensorRT's ONNX parser is known
to reject, from the ONNX-TensorRT operator support matrix (docs/operators.md of
onnx/onnx-tensorrt, TensorRT 10.15: opsets 9 to 24; TensorRT 10.0 covered
9 to 20): operators marked unsupported, non-standard domains (they need a
plugin), and a few documented attribute restrictions. It is conservative: an op
not listed may still fail on an older TensorRT release, and the parser has
the final word (`build.EngineFromOnnx` reports its first error). INT64 is not
listed: TensorRT 10 supports INT64 tensors natively (the cast-down to INT32
belongs to TensorRT 8/9); only DOUBLE is still cast (to FLOAT, clamped).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from compiler.ground.errors import InvalidInput, UsageError
from targets.tensorrt.shapes import ShapeProfile, ShapeRange, real_inputs, shape_profiles

if TYPE_CHECKING:
    from targets.profiles import DeviceProfile

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WORKSPACE_BYTES",
    "MAX_OPSET",
    "MIN_OPSET",
    "PRECISIONS",
    "SPARSITY_2_4",
    "SPARSITY_KEY",
    "UNSUPPORTED_OPS",
    "BuilderSettings",
    "ShapeProfile",
    "ShapeRange",
    "check_onnx_for_tensorrt",
    "check_qdq_for_tensorrt",
    "derive_settings",
    "graph_precision",
    "has_float16",
    "has_qdq",
]

PRECISIONS = ("fp32", "fp16", "int8")

# Written by passes/prune/semi_structured.py (SPARSITY_KEY, SPARSITY_2_4); a test
# keeps the two in step without importing the pruning pass here.
SPARSITY_KEY = "edgec.sparsity"
SPARSITY_2_4 = "2:4"

# TensorRT's own default is the whole device memory; an edge build wants a bound.
DEFAULT_WORKSPACE_BYTES = 1 << 30

# The ONNX parser of TensorRT 10.15 documents opsets 9..24 (10.0: 9..20).
MIN_OPSET = 9
MAX_OPSET = 24

# Operators marked "N" in ONNX-TensorRT's support matrix for TensorRT 10.15.
UNSUPPORTED_OPS = frozenset(
    {
        "AffineGrid",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "CenterCropPad",
        "Col2Im",
        "Compress",
        "ConcatFromSequence",
        "ConvInteger",
        "DFT",
        "Det",
        "DynamicQuantizeLinear",
        "ImageDecoder",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "MelWeightMatrix",
        "Multinomial",
        "NegativeLogLikelihoodLoss",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QLinearConv",
        "QLinearMatMul",
        "RegexFullMatch",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SoftmaxCrossEntropyLoss",
        "SplitToSequence",
        "StringConcat",
        "StringNormalizer",
        "StringSplit",
        "TfIdfVectorizer",
        "Unique",
    }
)

_STD_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# Element types TensorRT cannot take at all (graph inputs, outputs, initializers).
_UNSUPPORTED_TYPES: dict[int, str] = {
    TensorProto.STRING: "STRING",
    TensorProto.COMPLEX64: "COMPLEX64",
    TensorProto.COMPLEX128: "COMPLEX128",
    TensorProto.INT16: "INT16",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
}


@dataclass(frozen=True)
class BuilderSettings:
    """What `EngineFromOnnx` asks TensorRT's builder for (always a strongly typed network).

    Attributes:
        precision: what the graph carries ("fp32", "fp16", "int8"); descriptive
            (the report says it), not a builder flag: the graph's types decide.
        sparse_weights: `BuilderFlag.SPARSE_WEIGHTS`.
        workspace_bytes: the limit of `MemoryPoolType.WORKSPACE` (scratch memory
            the tactics may use).
        profiles: one `ShapeProfile` per network input, together forming the
            engine's single optimization profile.
        tf32: leave TensorRT's default `BuilderFlag.TF32` on (Ampere+ runs fp32
            matrix math with a 10-bit mantissa). Off for fp32 graphs, so that an
            "fp32" engine computes in fp32, as the report claims.
        dla_core: build for this DLA core with `BuilderFlag.GPU_FALLBACK`
            (Jetson Orin); None builds for the GPU.
        builder_optimization_level: TensorRT's 0..5 (None: TensorRT's default, 3).
    """

    precision: str
    sparse_weights: bool
    workspace_bytes: int
    profiles: tuple[ShapeProfile, ...]
    tf32: bool = True
    dla_core: int | None = None
    builder_optimization_level: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", tuple(self.profiles))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be positive, got {self.workspace_bytes}")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"one shape profile per input, got {names}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError(f"dla_core must be >= 0, got {self.dla_core}")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise ValueError(f"builder_optimization_level must be 0..5, got {level}")

    def profile(self, name: str) -> ShapeProfile | None:
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def is_static(self) -> bool:
        return all(p.is_static for p in self.profiles)

    def replace(self, **changes: Any) -> BuilderSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, for the report."""
        d = dataclasses.asdict(self)
        d["profiles"] = [p.to_dict() for p in self.profiles]
        d["strongly_typed"] = True
        return d


def derive_settings(
    model: onnx.ModelProto,
    *,
    precision: str,
    batch: int = 1,
    max_batch: int | None = None,
    device_profile: DeviceProfile | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    shape_ranges: Mapping[str, ShapeRange] | None = None,
    use_dla: bool = True,
) -> BuilderSettings:
    """Builder settings for `model` (see the module docstring for the rules).

    `max_batch` defaults to `batch`. `input_shapes` gives full shapes for inputs
    with dynamic dimensions besides the batch axis, `shape_ranges` (min, opt,
    max) shapes for them; a dynamic axis 0 always gets the batch range (see
    `shapes.shape_profiles`).

    Raises UsageError for flags that do not fit (unknown precision, max_batch <
    batch, a device without TensorRT 10+ or without the precision, dynamic dims
    without shapes) and InvalidInput for a model TensorRT cannot build as asked
    (illegal Q/DQ, int8 without Q/DQ, fp16 without float16 tensors).
    """
    max_batch = _check_batch_flags(precision, batch, max_batch)
    built = _check_graph_precision(model, precision)
    sparse = model_is_2_4_sparse(model)
    workspace = DEFAULT_WORKSPACE_BYTES
    dla_core: int | None = None
    if device_profile is not None:
        sparse, workspace = _fit_device(
            device_profile, precision=built, sparse=sparse, workspace=workspace
        )
        if use_dla and device_profile.dla_cores and built in ("fp16", "int8"):
            dla_core = 0
    profiles = shape_profiles(model, batch, max_batch, input_shapes, shape_ranges)
    return BuilderSettings(
        precision=built,
        sparse_weights=sparse,
        workspace_bytes=workspace,
        profiles=profiles,
        tf32=built != "fp32",
        dla_core=dla_core,
    )


def _check_batch_flags(precision: str, batch: int, max_batch: int | None) -> int:
    """Refuse an unknown precision or a bad batch range; returns max_batch (default: batch)."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    max_batch = batch if max_batch is None else max_batch
    if max_batch < batch:
        raise UsageError(f"max_batch ({max_batch}) must be at least batch ({batch})")
    return max_batch


def _check_graph_precision(model: onnx.ModelProto, precision: str) -> str:
    """The precision the graph carries, after refusing what TensorRT cannot build as asked.

    Q/DQ nodes must be TensorRT-legal; `precision` int8 needs Q/DQ, fp16 needs
    float16 tensors (a strongly typed network builds the types it is given).
    A graph with Q/DQ is int8 whatever was asked.
    """
    quantized = has_qdq(model)
    if quantized:
        problems = check_qdq_for_tensorrt(model)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidInput(
                f"the model's Q/DQ nodes are not what TensorRT accepts: {problems[0]}{more}; "
                "re-quantize for --target tensorrt (symmetric int8, zero point 0, weights "
                "per output channel)"
            )
        if precision != "int8":
            logger.info("the model holds Q/DQ nodes: building int8 layers despite %s", precision)
        return "int8"
    if precision == "int8":
        raise InvalidInput(
            "TensorRT builds int8 engines only from explicitly quantized models "
            "(QuantizeLinear/DequantizeLinear), and this one has none; quantize it first "
            "(edgec compile --precision int8 --target tensorrt runs the quantize pass)"
        )
    if precision == "fp16" and not has_float16(model):
        raise InvalidInput(
            "TensorRT builds strongly typed networks: an fp16 engine needs a graph with float16 "
            "tensors, and this one has none; convert it first (edgec compile --precision fp16 "
            "runs the FP16 pass)"
        )
    return precision


def graph_precision(model: onnx.ModelProto) -> str:
    """What the graph carries: int8 (Q/DQ), fp16 (float16 tensors or casts), else fp32."""
    if has_qdq(model):
        return "int8"
    return "fp16" if has_float16(model) else "fp32"


def _fit_device(
    d: DeviceProfile, *, precision: str, sparse: bool, workspace: int
) -> tuple[bool, int]:
    """(sparse, workspace) narrowed to what device `d` runs; refuses what it cannot."""
    if "tensorrt" not in d.targets:
        if d.tensorrt_version is not None:
            major, minor = d.tensorrt_version
            raise UsageError(
                f"device {d.name} cannot have TensorRT 10 or newer: its NVIDIA software "
                f"({d.jetpack or 'its BSP'}) ships TensorRT {major}.{minor}, and edgec's "
                f"tensorrt target needs 10 or 11; choose --target {d.target}"
            )
        raise UsageError(
            f"device {d.name} has no GPU that TensorRT can target (its targets: "
            f"{', '.join(d.targets)}); choose --target {d.target}"
        )
    if precision == "fp16" and not d.supports_fp16:
        raise UsageError(f"device {d.name} does not run fp16; use --precision fp32")
    if precision == "int8" and not d.supports_int8:
        raise UsageError(f"device {d.name} does not run int8; use an unquantized model")
    if sparse and not d.supports_sparsity:
        logger.warning(
            "device %s has no 2:4 sparse tensor cores (Ampere or newer needed); "
            "building without SPARSE_WEIGHTS",
            d.name,
        )
        sparse = False
    if d.max_workspace_bytes is not None:
        workspace = min(workspace, d.max_workspace_bytes)
    return sparse, workspace


def model_is_2_4_sparse(model: onnx.ModelProto) -> bool:
    return any(p.key == SPARSITY_KEY and p.value == SPARSITY_2_4 for p in model.metadata_props)


def has_qdq(model: onnx.ModelProto) -> bool:
    """True when the main graph holds QuantizeLinear or DequantizeLinear."""
    return any(n.op_type in _QDQ and n.domain in _STD_DOMAINS for n in model.graph.node)


def _is_f16(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == TensorProto.FLOAT16


def has_float16(model: onnx.ModelProto) -> bool:
    """True when the main graph holds float16 tensors: initializers, inputs, outputs, value
    infos, Constant values or Casts to float16 (what an FP16 pass leaves, with or without
    float32 I/O)."""
    g = model.graph
    if any(t.data_type == TensorProto.FLOAT16 for t in g.initializer):
        return True
    if any(_is_f16(vi) for vi in (*g.input, *g.output, *g.value_info)):
        return True
    for node in g.node:
        if node.domain not in _STD_DOMAINS:
            continue
        if node.op_type == "Cast" and _attr(node, "to", 0) == TensorProto.FLOAT16:
            return True
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type == TensorProto.FLOAT16:
                return True
    return False


# --------------------------------------------------------------------------- Q/DQ legality


class _Graph:
    """Constants, producers and consumers of one graph, by value name."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        inputs = {vi.name for vi in graph.input}
        # An initializer that is also a graph input is an overridable default, not a constant.
        self.consts: dict[str, TensorProto] = {
            t.name: t for t in graph.initializer if t.name not in inputs
        }
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, i))
            if node.op_type == "Constant" and node.domain in _STD_DOMAINS and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = a.t

    def array(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        if t is None:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - external data not loaded, exotic types
            return None

    def elem_type(self, name: str) -> int | None:
        t = self.consts.get(name)
        return None if t is None else t.data_type


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto) -> str:
    return (
        f"{node.op_type} {node.name!r}"
        if node.name
        else f"{node.op_type} (output {node.output[0]!r})"
    )


def check_qdq_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """Every way the main graph's Q/DQ nodes break TensorRT's explicit-quantization rules.

    TensorRT wants: int8 (not uint8, not a missing zero point, which ONNX
    reads as uint8), zero points 0, constant positive scales, activations
    quantized per tensor, weights per tensor or per output channel on the axis
    `TENSORRT_SPEC.weight_axis` names for the consuming op, no blocked
    quantization. One line per problem; empty when all is well.
    """
    g = _Graph(model.graph)
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in _QDQ or node.domain not in _STD_DOMAINS:
            continue
        problems.extend(_check_qdq_node(g, node))
    return problems


def _check_qdq_node(g: _Graph, node: onnx.NodeProto) -> list[str]:
    what = _label(node)
    problems: list[str] = []
    if len(node.input) < 2:
        return [f"{what} has no scale"]
    scale = g.array(node.input[1])
    if scale is None:
        problems.append(
            f"{what} has a scale that is not a constant (TensorRT needs it at build time)"
        )
    elif not np.issubdtype(scale.dtype, np.floating) or not np.all(scale > 0):
        problems.append(f"{what} has a scale that is not positive floating point")
    if _attr(node, "block_size", 0):
        problems.append(
            f"{what} uses blocked quantization (block_size); TensorRT's int8 path does not"
        )

    zp_name = node.input[2] if len(node.input) > 2 else ""
    if zp_name:
        zp_type = g.elem_type(zp_name)
        zp = g.array(zp_name)
        if zp is None:
            problems.append(f"{what} has a zero point that is not a constant")
        elif zp_type != TensorProto.INT8:
            problems.append(
                f"{what} has a {TensorProto.DataType.Name(zp_type or 0)} zero point; "
                "TensorRT quantizes to int8"
            )
        elif np.any(zp != 0):
            problems.append(
                f"{what} has a non-zero zero point ({int(zp.flat[np.flatnonzero(zp)[0]])}); "
                "TensorRT needs zero point 0"
            )
    elif node.op_type == "QuantizeLinear":
        if _attr(node, "output_dtype", 0) != TensorProto.INT8:
            problems.append(
                f"{what} has no zero point, so ONNX quantizes to uint8; TensorRT quantizes to "
                "int8: give it an int8 zero point of 0"
            )
    if node.op_type == "DequantizeLinear":
        x_type = g.elem_type(node.input[0])
        if x_type is not None and x_type != TensorProto.INT8:
            problems.append(
                f"{what} dequantizes a {TensorProto.DataType.Name(x_type)} constant; "
                "TensorRT needs int8"
            )

    if scale is not None and scale.ndim > 1:
        problems.append(
            f"{what} has a {scale.ndim}-D scale (blocked quantization); TensorRT's int8 path does not"
        )
    elif scale is not None and scale.size > 1:
        problems.extend(_check_per_channel(g, node, scale.size))
    return problems


def _weight_shape(g: _Graph, node: onnx.NodeProto) -> tuple[int, ...] | None:
    """Shape of the constant this Q/DQ (de)quantizes, or None when it quantizes an activation."""
    x = g.array(node.input[0])
    if x is None and node.op_type == "DequantizeLinear":
        q = g.producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            x = g.array(q.input[0])
    return None if x is None else tuple(x.shape)


def _check_per_channel(g: _Graph, node: onnx.NodeProto, channels: int) -> list[str]:
    what = _label(node)
    shape = _weight_shape(g, node)
    if shape is None:
        return [
            f"{what} quantizes an activation per channel; TensorRT quantizes activations per tensor"
        ]
    rank = len(shape)
    axis = int(_attr(node, "axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or shape[axis] != channels:
        return [f"{what} has {channels} scales for axis {axis} of a weight shaped {shape}"]
    if node.op_type == "QuantizeLinear":
        return []  # checked at the DequantizeLinear that feeds the weighted op
    from passes.quantize.spec import TENSORRT_SPEC  # lazy: the registry imports this module

    problems = []
    for consumer, index in g.consumers.get(node.output[0], []):
        if consumer.op_type not in _WEIGHTED or consumer.domain not in _STD_DOMAINS:
            continue  # a reshaping op in between: TensorRT decides, we cannot tell the axis
        if index != 1:
            problems.append(
                f"{what} feeds input {index} of {_label(consumer)} per channel; TensorRT takes "
                "per-channel weights only as the weight operand"
            )
            continue
        trans_b = bool(_attr(consumer, "transB", 0))
        expected = TENSORRT_SPEC.weight_axis(consumer.op_type, trans_b=trans_b, rank=rank)
        if axis != expected:
            problems.append(
                f"{what} quantizes the weight of {_label(consumer)} along axis {axis}; "
                f"TensorRT needs its output-channel axis {expected}"
            )
    return problems


# --------------------------------------------------------------------------- parser support


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes of `graph` and its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    yield from _walk(sub)


def _restrictions(node: onnx.NodeProto) -> str | None:
    """A documented attribute restriction of TensorRT's parser that `node` breaks."""
    op = node.op_type
    if op == "Resize":
        mode = _bytes_attr(node, "mode", "nearest")
        ctm = _bytes_attr(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            return f"mode {mode!r} (TensorRT resizes nearest or linear)"
        if ctm == "tf_crop_and_resize":
            return "coordinate_transformation_mode 'tf_crop_and_resize'"
        if _attr(node, "antialias", 0):
            return "antialias=1"
    if op in ("MaxPool", "AveragePool", "LpPool"):
        if any(d != 1 for d in _attr(node, "dilations", [])):
            return "dilations other than 1"
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            return "the Indices output"
    if op == "TopK" and _attr(node, "sorted", 1) != 1:
        return "sorted=0"
    if op == "LSTM" and (_attr(node, "layout", 0) or _attr(node, "input_forget", 0)):
        return "layout=1 or input_forget=1"
    if op == "ScatterND" and _bytes_attr(node, "reduction", "none") != "none":
        return "a reduction other than 'none'"
    if op == "LayerNormalization" and any(node.output[1:]):
        return "outputs besides Y"
    return None


def _bytes_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    v = _attr(node, name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def check_onnx_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """What TensorRT's ONNX parser is known to reject or change in `model`; one line each.

    Covers the opset range, unsupported and non-standard operators (model-local
    functions are fine: the parser inlines them), documented attribute
    restrictions, element types TensorRT has no form for, DOUBLE tensors (cast
    to FLOAT) and Q/DQ that break `check_qdq_for_tensorrt`. Conservative: an
    empty list does not promise that the parser accepts the model.
    """
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in _STD_DOMAINS), None)
    if opset is None:
        problems.append("the model imports no default ONNX opset")
    elif opset < MIN_OPSET:
        problems.append(
            f"opset {opset} is older than TensorRT's ONNX parser supports ({MIN_OPSET} to "
            f"{MAX_OPSET}); convert it (onnx.version_converter) or re-export with --opset 17"
        )
    elif opset > MAX_OPSET:
        problems.append(
            f"opset {opset} is newer than TensorRT's ONNX parser documents ({MIN_OPSET} to "
            f"{MAX_OPSET}); re-export with --opset 17"
        )

    local_functions = {(f.domain, f.name) for f in model.functions}
    unsupported: dict[str, list[str]] = defaultdict(list)
    for node in _walk(model.graph):
        label = node.name or (node.output[0] if node.output else "?")
        if node.domain not in _STD_DOMAINS:
            if (node.domain, node.op_type) not in local_functions:
                unsupported[f"{node.domain}::{node.op_type}"].append(label)
            continue
        if node.op_type in UNSUPPORTED_OPS:
            unsupported[node.op_type].append(label)
            continue
        restriction = _restrictions(node)
        if restriction:
            problems.append(
                f"{_label(node)} uses {restriction}, which TensorRT's parser does not support"
            )
    for op, names in sorted(unsupported.items()):
        standard = "::" not in op
        why = (
            "is not supported by TensorRT's ONNX parser"
            if standard
            else "is not a standard ONNX operator; TensorRT needs a plugin for it"
        )
        problems.append(f"{op} {why} ({len(names)} node(s), e.g. {names[0]!r})")

    graph = model.graph
    for kind, values in (("input", real_inputs(graph)), ("output", list(graph.output))):
        for vi in values:
            if not vi.type.HasField("tensor_type"):
                problems.append(f"graph {kind} {vi.name!r} is not a tensor (sequence/map/optional)")
                continue
            t = vi.type.tensor_type.elem_type
            if t in _UNSUPPORTED_TYPES:
                problems.append(
                    f"graph {kind} {vi.name!r} is {_UNSUPPORTED_TYPES[t]}, which TensorRT has no type for"
                )
            elif t == TensorProto.DOUBLE:
                problems.append(f"graph {kind} {vi.name!r} is DOUBLE; TensorRT runs it as FLOAT")
    doubles = [t.name for t in graph.initializer if t.data_type == TensorProto.DOUBLE]
    if doubles:
        problems.append(
            f"{len(doubles)} DOUBLE initializer(s) (e.g. {doubles[0]!r}); TensorRT casts them to "
            "FLOAT, clamping to +-FLT_MAX"
        )
    odd = [t.name for t in graph.initializer if t.data_type in _UNSUPPORTED_TYPES]
    if odd:
        problems.append(f"initializer {odd[0]!r} has a type TensorRT has no form for")
    if has_qdq(model):
        problems.extend(check_qdq_for_tensorrt(model))
    return problems
