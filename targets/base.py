"""The Target protocol and the name → Target registry.

A target lowers an optimized ONNX model to its runtime's format and opens a
runner on the artifact. Runners follow Polygraphy's shape: a context manager
with `infer(feeds) -> outputs`; GPU libraries are imported lazily inside.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx_ir as ir

from compiler.ground.errors import InvalidInput


@dataclass(frozen=True)
class Artifact:
    """What `lower` wrote: the path and its format (`onnx`, `ort`, `engine`)."""

    path: Path
    format: str


class Runner(Protocol):
    """An inference session on one artifact; use as a context manager."""

    input_names: list[str]

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def check_feeds(feeds: Mapping[str, np.ndarray], input_names: list[str], name: str) -> None:
    """Raise InvalidInput unless `feeds` names exactly the inputs `name` expects."""
    missing = [n for n in input_names if n not in feeds]
    unknown = [n for n in feeds if n not in input_names]
    if missing or unknown:
        raise InvalidInput(
            f"inputs do not match {name}: missing {missing}, unknown {unknown}; "
            f"it expects {input_names}"
        )


class Target(Protocol):
    """A place models run: onnxruntime CPU, onnxruntime CUDA, TensorRT."""

    name: str

    def unavailable_reason(self) -> str | None:
        """None when the target can run here, else a one-line reason with what to do."""
        ...

    def lower(
        self, model: ir.Model, out_dir: Path, *, stem: str, fmt: str | None = None
    ) -> Artifact:
        """Write the deployable artifact atomically into `out_dir`."""
        ...

    def runner(self, artifact: Path, *, threads: int | None = None) -> Runner:
        """Open a runner on an artifact this target wrote (or any .onnx file)."""
        ...


_REGISTRY: dict[str, Callable[[], Target]] = {}


def register(name: str) -> Callable[[Callable[[], Target]], Callable[[], Target]]:
    """Class decorator: make a target constructible by name."""

    def wrap(factory: Callable[[], Target]) -> Callable[[], Target]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def get_target(name: str) -> Target:
    """The target called `name`; raises KeyError listing the known ones."""
    _load_builtin_targets()
    if name not in _REGISTRY:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def target_names() -> list[str]:
    _load_builtin_targets()
    return sorted(_REGISTRY)


def _load_builtin_targets() -> None:
    # Imported for their @register side effect; each imports its runtime lazily.
    from targets import cpu, cuda, tensorrt  # noqa: F401
