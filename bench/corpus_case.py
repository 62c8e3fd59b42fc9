"""What a corpus model is: a builder of a torch module with example arguments, names
and dynamic axes, and the sizes its named dynamic dims take when compiled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Built:
    """A module in eval mode, example arguments (batch 2, so no exporter specializes
    the batch to 1), input and output names, dynamic axes by name."""

    module: Any
    args: tuple[Any, ...]
    inputs: list[str]
    outputs: list[str]
    axes: dict[str, dict[int, str]]


@dataclass(frozen=True)
class Case:
    """One corpus model: its builder and the sizes of its named dynamic dims (--dim)."""

    name: str
    family: str
    build: Callable[[], Built]
    dims: tuple[tuple[str, int], ...] = ()


def batch_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """Axis 0 of each name dynamic as `batch`."""
    return {name: {0: "batch"} for name in names}
