"""`models.catalog` (what `edgec models` lists without torch) says what each model is."""

from __future__ import annotations

import pytest

from models.catalog import CATALOG, catalog
from models.registry import MODELS, get_model


def test_the_catalog_lists_exactly_the_registry() -> None:
    assert [e.name for e in catalog()] == sorted(MODELS) == sorted(CATALOG)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_entry_matches_the_spec_and_the_built_module(name: str) -> None:
    entry, spec = CATALOG[name], get_model(name)
    assert entry.task == spec.task
    assert entry.weights == spec.weights_source
    assert entry.inputs == tuple((i.name, tuple(i.shape)) for i in spec.inputs)
    assert entry.params == sum(p.numel() for p in spec.build().parameters())
