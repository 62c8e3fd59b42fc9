"""Architectures nobody on the project wrote: random-init `transformers` models
(no download) exported with torch's TorchScript exporter (opset 17) with dynamic
batch and sequence, and seeded token data for them.

One copy for the tests and the benches that judge edgec on foreign models
(`tests/passes/precision`, `tests/compiler/test_dims.py`, `bench/fp16_compare.py`).
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import Any

import numpy as np

#: vocabulary sizes of the two models below
BERT_VOCAB = 30522
GPT2_VOCAB = 1000


def export_dynamic(
    module: Any,
    args: tuple[Any, ...],
    inputs: list[str],
    outputs: list[str],
    *,
    axes: dict[str, dict[int, str]] | None = None,
    dynamo: bool = False,
) -> bytes:
    """Every input and the first output dynamic in batch and sequence, other outputs in
    batch, unless `axes` names them. TorchScript exporter at opset 17, or with `dynamo`
    torch.export's exporter at its own default opset (what its users get)."""
    import torch

    if axes is None:
        axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
        axes.update({name: {0: "batch"} for name in outputs})
        axes[outputs[0]] = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(not dynamo):
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                module.eval(),
                args,
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                verbose=False,
            )
            assert program is not None  # no file given: the exporter returns its program
            return bytes(program.model_proto.SerializeToString())
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
    return _bert_export(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256
    )


@functools.cache
def bert_base_bytes() -> bytes:
    """BERT-base's shape (12 layers, hidden 768, 12 heads), random init (seed 0), the
    same inputs and dynamic axes as `bert_bytes`: the size teams deploy."""
    return _bert_export(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072
    )


def _bert_export(**shape: int) -> bytes:
    module, args = bert_module(**shape)
    return export_dynamic(
        module,
        args,
        ["input_ids", "attention_mask", "token_type_ids"],
        ["last_hidden_state", "pooler_output"],
    )


def bert_module(**shape: int) -> tuple[Any, tuple[Any, ...]]:
    """A random-init (seed 0) transformers BERT of `shape` taking (ids, mask, types) and
    returning (last_hidden_state, pooler_output), and example arguments (2 x 16)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(**shape)

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config)

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state, out.pooler_output

    ids = torch.randint(0, config.vocab_size, (2, 16))
    ones = torch.ones(2, 16, dtype=torch.long)
    return Bert(), (ids, ones, torch.zeros_like(ones))


def token_feeds(
    rng: np.random.Generator, vocab: int, batch: int, length: int, *, segments: bool
) -> dict[str, np.ndarray]:
    """Seeded random token ids below `vocab`; the last quarter of the first sequence is
    padding (mask 0); with `segments`, two token types (second half 1)."""
    mask = np.ones((batch, length), np.int64)
    mask[0, length - length // 4 :] = 0
    feeds = {
        "input_ids": rng.integers(0, vocab, (batch, length), dtype=np.int64),
        "attention_mask": mask,
    }
    if segments:
        types = np.zeros((batch, length), np.int64)
        types[:, length // 2 :] = 1
        feeds["token_type_ids"] = types
    return feeds


def bert_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    return token_feeds(rng, BERT_VOCAB, batch, length, segments=True)


@functools.cache
def gpt2_bytes() -> bytes:
    """A 2-layer GPT-2 (hidden 128, vocabulary 1000), random init (seed 0): causal
    attention, tanh-GELU with Pow, Conv1D layers as Gemm; dynamic batch and sequence."""
    import torch
    from transformers import GPT2Model

    config = gpt2_config()
    torch.manual_seed(0)

    class Gpt2(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt2 = GPT2Model(config)

        def forward(self, ids: Any, mask: Any) -> Any:
            return self.gpt2(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    ids = torch.randint(0, GPT2_VOCAB, (2, 16))
    return export_dynamic(
        Gpt2(),
        (ids, torch.ones(2, 16, dtype=torch.long)),
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
    )


def gpt2_config() -> Any:
    """The GPT2Config of `gpt2_bytes`: 2 layers, hidden 128, 2 heads, vocabulary 1000."""
    from transformers import GPT2Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = GPT2Config(
        n_layer=2, n_embd=128, n_head=2, n_positions=128, vocab_size=GPT2_VOCAB, bos_token_id=0
    )
    config.eos_token_id = 0
    return config


def gpt2_feeds(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
    return token_feeds(rng, GPT2_VOCAB, batch, length, segments=False)
