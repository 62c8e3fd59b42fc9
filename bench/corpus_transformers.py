"""The corpus's `transformers` models, built from configs with tiny sizes (no download),
random init (torch.manual_seed(0)): encoders (BERT via bench.foreign, DistilBERT,
RoBERTa, DeBERTa-v2), decoders (GPT-2 with its key/value cache as inputs and outputs,
Llama) and speech encoders (Whisper's encoder, Wav2Vec2)."""

from __future__ import annotations

from typing import Any

import torch

from bench.corpus_case import Built, batch_axes
from bench.foreign import bert_module, gpt2_config

#: vocabulary of the small models built here (BERT keeps BERT's)
VOCAB = 1000


def _token_axes(inputs: list[str], outputs: list[str]) -> dict[str, dict[int, str]]:
    """Inputs and the first output dynamic in batch and sequence, other outputs in batch."""
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update(batch_axes(outputs[1:]))
    axes[outputs[0]] = {0: "batch", 1: "sequence"}
    return axes


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, VOCAB, (2, 16)), torch.ones(2, 16, dtype=torch.long)


class _Call(torch.nn.Module):
    """(ids, mask) -> one field of a transformers model's output."""

    def __init__(self, model: Any, field: str, **kwargs: Any) -> None:
        super().__init__()
        self.model, self.field, self.kwargs = model, field, kwargs

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, **self.kwargs)
        return getattr(out, self.field)


def bert() -> Built:
    module, args = bert_module(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256
    )
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    outputs = ["last_hidden_state", "pooler_output"]
    return Built(module, args, inputs, outputs, _token_axes(inputs, outputs))


def distilbert() -> Built:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, n_layers=2, dim=128, n_heads=2, hidden_dim=256)
    return _encoder(DistilBertModel(config))


def roberta() -> Built:
    """RoBERTa: position ids from the padding token (cumsum over ids != 1)."""
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = _encoder_config(RobertaConfig, max_position_embeddings=130)
    return _encoder(RobertaModel(config, add_pooling_layer=False))


def _encoder_config(config_class: Any, **extra: Any) -> Any:
    """A 2-layer, 2-head encoder config, hidden 128, intermediate 256."""
    return config_class(
        vocab_size=VOCAB,
        num_hidden_layers=2,
        hidden_size=128,
        num_attention_heads=2,
        intermediate_size=256,
        **extra,
    )


def deberta_v2() -> Built:
    """DeBERTa-v2: disentangled attention (relative position buckets gathered per head)."""
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(0)
    return _encoder(DebertaV2Model(_encoder_config(DebertaV2Config)))


def _encoder(model: Any) -> Built:
    inputs, outputs = ["input_ids", "attention_mask"], ["last_hidden_state"]
    module = _Call(model, "last_hidden_state")
    return Built(module, _tokens(), inputs, outputs, _token_axes(inputs, outputs))


def llama() -> Built:
    """A Llama LM (2 layers, hidden 64, 4 query / 2 key-value heads: grouped-query
    attention, RoPE, RMSNorm, SiLU-gated MLP)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    module = _Call(LlamaForCausalLM(config), "logits", use_cache=False)
    inputs, outputs = ["input_ids", "attention_mask"], ["logits"]
    return Built(module, _tokens(), inputs, outputs, _token_axes(inputs, outputs))


class _Gpt2Step(torch.nn.Module):
    """One decoding step of a 2-layer GPT-2 with its key/value cache as plain tensors:
    (ids, mask over past + new tokens, past key and value per layer) -> (logits, present
    key and value per layer). Named parameters, not *past: the dynamo exporter maps
    dynamic axes onto the signature's names."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        past_key_0: torch.Tensor,
        past_value_0: torch.Tensor,
        past_key_1: torch.Tensor,
        past_value_1: torch.Tensor,
    ) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache([(past_key_0, past_value_0), (past_key_1, past_value_1)])
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def gpt2_kv() -> Built:
    """GPT-2 (bench.foreign's config) as an LM, past key/values in, present out."""
    from transformers import GPT2LMHeadModel

    config = gpt2_config()
    assert config.n_layer == 2, "_Gpt2Step names two layers' caches"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    head_dim = config.n_embd // config.n_head
    ids = torch.randint(0, config.vocab_size, (2, 4))
    mask = torch.ones(2, 12, dtype=torch.long)
    past = [torch.randn(2, config.n_head, 8, head_dim) for _ in range(2 * config.n_layer)]
    kinds = [f"{kind}_{i}" for i in range(config.n_layer) for kind in ("key", "value")]
    inputs = ["input_ids", "attention_mask", *[f"past_{k}" for k in kinds]]
    outputs = ["logits", *[f"present_{k}" for k in kinds]]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"}}
    axes["logits"] = {0: "batch", 1: "sequence"}
    axes.update({f"past_{k}": {0: "batch", 2: "past"} for k in kinds})
    axes.update({f"present_{k}": {0: "batch", 2: "total"} for k in kinds})
    return Built(_Gpt2Step(model), (ids, mask, *past), inputs, outputs, axes)


class _Encode(torch.nn.Module):
    """features -> last_hidden_state of a speech encoder."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features).last_hidden_state


def whisper_encoder() -> Built:
    """Whisper's encoder (2 layers, d_model 64): two Conv1d + GELU over 80 mel bins x 100
    frames (its fixed length: twice max_source_positions), sinusoidal positions."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=50,
    )
    module = _Encode(WhisperEncoder(config))
    args = (torch.randn(2, 80, 100),)
    names = ["input_features", "last_hidden_state"]
    return Built(module, args, names[:1], names[1:], batch_axes(names))


def wav2vec2() -> Built:
    """Wav2Vec2 (2 layers, hidden 64) on raw audio: a strided Conv1d feature extractor with
    GroupNorm, a grouped positional convolution, a transformer; dynamic sample count."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 2, 2),
        conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    module = _Encode(Wav2Vec2Model(config))
    axes = {
        "input_values": {0: "batch", 1: "samples"},
        "last_hidden_state": {0: "batch", 1: "frames"},
    }
    return Built(module, (torch.randn(2, 4000),), ["input_values"], ["last_hidden_state"], axes)
