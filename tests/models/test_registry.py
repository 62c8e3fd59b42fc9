"""The zoo table: names, lookups and the error for an unknown name."""

from __future__ import annotations

import pytest

from models.registry import MODELS, get_model, model_names
from models.spec import ModelSpec


def test_names_are_the_table_sorted() -> None:
    assert (
        model_names()
        == sorted(MODELS)
        == [
            "digits_autoencoder",
            "digits_cnn",
            "digits_gru",
            "digits_lstm",
            "digits_vit",
            "minilm_l6",
            "mobilenet_v2",
            "resnet18",
        ]
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lookup_returns_the_spec_of_that_name(name: str) -> None:
    spec = get_model(name)
    assert isinstance(spec, ModelSpec) and spec.name == name
    assert spec.inputs and spec.output_names


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as e:
        get_model("nope")
    assert e.value.args[0] == (
        "unknown zoo model 'nope'; known: digits_autoencoder, digits_cnn, digits_gru, digits_lstm, "
        "digits_vit, minilm_l6, mobilenet_v2, resnet18"
    )
