"""Simplify a model with onnx-simplifier (onnxsim).

Rewrite: whatever ``onnxsim.simplify`` does with its defaults — constant folding
(shape subgraphs included: ``Reshape(x, Concat(Shape(x)[:1], [12]))`` becomes
``Reshape(x, [-1, 12])``), shape inference and the onnx-optimizer fusions and
eliminations (it already folds BatchNormalization into Conv, removes inference
Dropout/Identity, composes Transposes, drops no-op Reshapes, fuses a 2-D float32
MatMul+Add into Gemm), except two rewrites onnxsim 0.8 adds to onnx-optimizer's set:

- ``fuse_attention`` turns hand-written self-attention into ORT's contrib
  ``com.microsoft::Attention``, which TensorRT and other runtimes cannot run; a
  target may opt in, cleanup stays portable;
- ``fuse_matmul_add_bias_into_gemm_batched``: once shapes are known it rewrites a
  rank-3 MatMul+Add into Shape/Slice/Concat/Reshape → Gemm → Reshape (more nodes,
  dynamic shape arithmetic), so edgec keeps MatMul+Add there.

Input shapes are never overwritten, so dynamic (symbolic) dims such as the batch
stay dynamic. Its math is its own; each rewrite preserves the function up to float
rounding, which `passes.verify` checks.

onnxsim is run to a fixed point (at most `max_rounds` calls, usually two: one that
simplifies and one that confirms), so a second run of the pass reports False.

``modified`` is exact: onnxsim renames values, names nodes, adds value_info and
writes its own ``onnxsim.*`` metadata on every run, so the pass compares a
name-independent fingerprint of the graph before and after (the op sequence with
each input identified by its producer's position or by the content of the
initializer it reads, attributes, initializer contents and the graph's signature;
intermediate shape annotations are not part of it). When the fingerprints match,
the input model is returned (as a copy) and ``modified`` is False. On a change, the
model keeps its own metadata_props (onnxsim's bookkeeping entries are dropped).

Refuses / falls back: when onnxsim raises, or its own random-input check fails
(``check_n > 0``), the pass logs a warning and returns the model unchanged with
``modified=False`` (or, if an earlier round of the fixed-point loop succeeded, that
round's result); it never raises for onnxsim's failures. Local functions are
not inlined and subgraphs (If/Loop bodies) are not simplified.
"""

from __future__ import annotations

import hashlib
import logging

import onnx
import onnx_ir as ir
from onnx import numpy_helper

logger = logging.getLogger(__name__)

# onnxsim optimizers that are not portable or that grow the graph (see above).
_SKIPPED_OPTIMIZERS = ("fuse_attention", "fuse_matmul_add_bias_into_gemm_batched")


def _tensor_key(tensor: onnx.TensorProto) -> tuple:
    array = numpy_helper.to_array(tensor)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    return (tensor.data_type, tuple(tensor.dims), digest)


def _attribute_key(attr: onnx.AttributeProto) -> tuple:
    if attr.type == onnx.AttributeProto.TENSOR:
        return (attr.name, "tensor", _tensor_key(attr.t))
    if attr.type == onnx.AttributeProto.GRAPH:
        return (attr.name, "graph", graph_fingerprint(attr.g))
    if attr.type == onnx.AttributeProto.GRAPHS:
        return (attr.name, "graphs", tuple(graph_fingerprint(g) for g in attr.graphs))
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, list):
        value = tuple(value)
    return (attr.name, attr.type, value)


def graph_fingerprint(graph: onnx.GraphProto) -> str:
    """A digest of `graph` that ignores value/node names, doc strings and value_info."""
    ids: dict[str, object] = {}
    inputs = []
    for i, vi in enumerate(graph.input):
        ids[vi.name] = ("input", i)
        inputs.append(vi.type.SerializeToString(deterministic=True))
    initializers = []
    for init in graph.initializer:
        key = _tensor_key(init)
        ids.setdefault(init.name, ("init", key))
        initializers.append(key)
    nodes = []
    for k, node in enumerate(graph.node):
        in_ids = tuple(ids.get(name, ("outer", name)) if name else None for name in node.input)
        attrs = tuple(sorted(_attribute_key(a) for a in node.attribute))
        nodes.append((node.domain or "", node.op_type, in_ids, attrs, len(node.output)))
        for j, name in enumerate(node.output):
            if name:
                ids[name] = ("node", k, j)
    outputs = tuple(
        (vi.name, ids.get(vi.name), vi.type.SerializeToString(deterministic=True))
        for vi in graph.output
    )
    signature = (
        tuple(vi.name for vi in graph.input),
        tuple(inputs),
        tuple(sorted(initializers)),
        tuple(nodes),
        outputs,
    )
    return hashlib.sha256(repr(signature).encode()).hexdigest()


def model_fingerprint(proto: onnx.ModelProto) -> str:
    opsets = tuple(sorted((o.domain, o.version) for o in proto.opset_import))
    functions = tuple(f.SerializeToString(deterministic=True) for f in proto.functions)
    return hashlib.sha256(
        repr((opsets, graph_fingerprint(proto.graph), functions)).encode()
    ).hexdigest()


class SimplifyWithOnnxsimPass(ir.passes.FunctionalPass):
    """Run onnxsim.simplify; keep dynamic dims; fall back to the input on failure.

    Args:
        check_n: random-input checks onnxsim runs itself (0: none; the pipeline's
            ``--verify`` uses `passes.verify.check_equivalent` instead).
        skip_fuse_bn: leave BatchNormalization for `FuseConvBatchNormPass`.
        skipped_optimizers: onnxsim optimizer passes not to run (default: the
            non-portable attention fusion and the batched MatMul → Gemm rewrite).
        max_rounds: most onnxsim calls spent looking for a fixed point.
    """

    def __init__(
        self,
        *,
        check_n: int = 0,
        skip_fuse_bn: bool = False,
        skipped_optimizers: tuple[str, ...] = _SKIPPED_OPTIMIZERS,
        max_rounds: int = 3,
    ) -> None:
        super().__init__()
        self.check_n = check_n
        self.skip_fuse_bn = skip_fuse_bn
        self.skipped_optimizers = skipped_optimizers
        self.max_rounds = max_rounds

    def _simplify(self, proto: onnx.ModelProto) -> onnx.ModelProto | None:
        """One onnxsim call; None (with a warning) when it fails."""
        import onnxsim

        try:
            simplified, ok = onnxsim.simplify(
                proto,
                check_n=self.check_n,
                skip_fuse_bn=self.skip_fuse_bn,
                skipped_optimizers=list(self.skipped_optimizers),
            )
        except Exception as e:  # noqa: BLE001 - any onnxsim failure means "leave it alone"
            logger.warning(
                "onnxsim failed (%s: %s); continuing with the model as it was before this call",
                type(e).__name__,
                " ".join(str(e).split())[:300],
            )
            return None
        if not ok:
            logger.warning(
                "onnxsim's random-input check failed; "
                "continuing with the model as it was before this call"
            )
            return None
        return simplified

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        proto = ir.to_proto(model)
        original = previous = model_fingerprint(proto)
        for _ in range(self.max_rounds):
            simplified = self._simplify(proto)
            if simplified is None:
                break  # keep what earlier rounds achieved, if any
            current = model_fingerprint(simplified)
            if current == previous:
                break
            proto, previous = simplified, current
        if previous == original:
            # a copy through the proto, not model.clone(): onnx-ir's cloner refuses a graph
            # whose nodes are not topologically sorted (a forward reference looks like an
            # outer-scope value), which onnxruntime accepts and the sort pass fixes later
            return ir.passes.PassResult(ir.from_proto(proto), modified=False)
        result = ir.from_proto(proto)
        result.metadata_props.clear()
        result.metadata_props.update(model.metadata_props)
        return ir.passes.PassResult(result, modified=True)
