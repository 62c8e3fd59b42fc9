"""Which zoo models exist: the name → ModelSpec table.

Adding a model means writing a function that returns a `models.spec.ModelSpec`
and adding one line to `MODELS`. The functions are called on lookup: building
a spec is cheap, the weights and data load when the spec's callables run.
"""

from __future__ import annotations

from collections.abc import Callable

from models import digits, digits_families, imagenet, minilm
from models.spec import ModelSpec

#: zoo name → the function returning its spec.
MODELS: dict[str, Callable[[], ModelSpec]] = {
    "digits_cnn": digits.digits_cnn,
    "digits_autoencoder": digits_families.digits_autoencoder,
    "digits_gru": digits.digits_gru,
    "digits_lstm": digits_families.digits_lstm,
    "digits_vit": digits_families.digits_vit,
    "minilm_l6": minilm.minilm_l6,
    "mobilenet_v2": imagenet.mobilenet_v2,
    "resnet18": imagenet.resnet18,
}


def model_names() -> list[str]:
    """The zoo's model names, sorted."""
    return sorted(MODELS)


def get_model(name: str) -> ModelSpec:
    """The zoo entry `name`; KeyError lists the known names."""
    if name not in MODELS:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(model_names())}")
    return MODELS[name]()
