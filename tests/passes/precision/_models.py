"""Models and checks shared by the FP16 tests: ONNX text models, the pass contract,
onnxruntime runs, and random-init transformers exported with torch (no download)."""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from compiler.ground.sessions import open_session
from passes.precision import Fp16Options, Fp16Pass, Fp16PassResult

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
F16 = onnx.TensorProto.FLOAT16
F32 = onnx.TensorProto.FLOAT


def build(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text (HEADER is prepended), numpy arrays as named initializers."""
    proto = onnx.parser.parse_model(HEADER + text)
    for name, array in initializers.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def serialized(model: ir.Model | onnx.ModelProto) -> bytes:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return proto.SerializeToString(deterministic=True)


def convert(
    proto: onnx.ModelProto, calibration: Any, **options: Any
) -> tuple[Fp16PassResult, onnx.ModelProto]:
    """Run the pass and hold it to the contract: full ONNX check, `modified` exact, a
    second run changes nothing and says so, and no integer/bool tensor is touched
    (initializers, Constant values, graph inputs/outputs)."""
    pass_ = Fp16Pass(calibration, Fp16Options(**options))
    result = pass_(ir.from_proto(proto))
    assert isinstance(result, Fp16PassResult)
    after = ir.to_proto(result.model)
    onnx.checker.check_model(after, full_check=True)
    once = serialized(after)
    assert result.modified == (once != serialized(ir.from_proto(proto)))
    again = pass_(result.model)
    assert again.modified is False
    assert serialized(again.model) == once
    assert _non_float(after) == _non_float(proto)
    return result, after


def _non_float(proto: onnx.ModelProto) -> dict[str, bytes | int]:
    """Every non-float tensor of the main graph, by name (initializers, Constant values)
    and the element types of non-float graph inputs/outputs."""
    floats = {F16, F32, onnx.TensorProto.DOUBLE}
    found: dict[str, bytes | int] = {
        t.name: t.SerializeToString() for t in proto.graph.initializer if t.data_type not in floats
    }
    for node in proto.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.t.data_type and attr.t.data_type not in floats:
                found[node.output[0]] = attr.t.SerializeToString()
    for v in [*proto.graph.input, *proto.graph.output]:
        if v.type.tensor_type.elem_type not in floats:
            found["io:" + v.name] = v.type.tensor_type.elem_type
    return found


def run(model: ir.Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs, onnxruntime CPU; float inputs cast to what the model declares."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    declared = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    fixed = {k: v.astype(np.float16) if declared.get(k) == F16 else v for k, v in feeds.items()}
    return list(open_session(proto.SerializeToString()).run(None, fixed))


def casts(proto: onnx.ModelProto) -> list[int]:
    """The `to` of every Cast of the main graph."""
    return [
        onnx.helper.get_attribute_value(a)
        for n in proto.graph.node
        if n.op_type == "Cast"
        for a in n.attribute
        if a.name == "to"
    ]


def half_initializers(proto: onnx.ModelProto) -> list[str]:
    return sorted(t.name for t in proto.graph.initializer if t.data_type == F16)


def io_types(proto: onnx.ModelProto) -> tuple[list[int], list[int]]:
    graph = proto.graph
    return (
        [v.type.tensor_type.elem_type for v in graph.input],
        [v.type.tensor_type.elem_type for v in graph.output],
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def size_ratio(after: onnx.ModelProto, before: onnx.ModelProto) -> float:
    return len(after.SerializeToString()) / len(before.SerializeToString())


# --- architectures nobody here wrote: random-init transformers, exported by torch ----------


def _export(module: Any, args: tuple[Any, ...], inputs: list[str], outputs: list[str]) -> bytes:
    import torch

    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update({name: {0: "batch"} for name in outputs})
    axes[outputs[0]] = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
        )
    return buffer.getvalue()


@functools.cache
def bert_bytes() -> bytes:
    """A 2-layer BERT (hidden 128), random init (seed 0), inputs input_ids,
    attention_mask, token_type_ids with dynamic batch and sequence."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256
    )

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config)

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state, out.pooler_output

    ids = torch.randint(0, config.vocab_size, (2, 16))
    ones = torch.ones(2, 16, dtype=torch.long)
    return _export(
        Bert(),
        (ids, ones, torch.zeros_like(ones)),
        ["input_ids", "attention_mask", "token_type_ids"],
        ["last_hidden_state", "pooler_output"],
    )


def bert_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    """Seeded random token ids in BERT's vocabulary; the last quarter of the first
    sequence is padding (mask 0); two segments."""
    mask = np.ones((batch, length), np.int64)
    mask[0, length - length // 4 :] = 0
    types = np.zeros((batch, length), np.int64)
    types[:, length // 2 :] = 1
    return {
        "input_ids": rng.integers(0, 30522, (batch, length), dtype=np.int64),
        "attention_mask": mask,
        "token_type_ids": types,
    }


@functools.cache
def gpt2_bytes() -> bytes:
    """A 2-layer GPT-2 (hidden 128, vocabulary 1000), random init (seed 0): causal
    attention, tanh-GELU with Pow, Conv1D layers as Gemm; dynamic batch and sequence."""
    import torch
    from transformers import GPT2Config, GPT2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=128, n_head=2, n_positions=128, vocab_size=1000, bos_token_id=0
    )
    config.eos_token_id = 0

    class Gpt2(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt2 = GPT2Model(config)

        def forward(self, ids: Any, mask: Any) -> Any:
            return self.gpt2(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    ids = torch.randint(0, 1000, (2, 16))
    return _export(
        Gpt2(),
        (ids, torch.ones(2, 16, dtype=torch.long)),
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
    )


def gpt2_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    mask = np.ones((batch, length), np.int64)
    mask[0, length - length // 4 :] = 0
    return {
        "input_ids": rng.integers(0, 1000, (batch, length), dtype=np.int64),
        "attention_mask": mask,
    }
