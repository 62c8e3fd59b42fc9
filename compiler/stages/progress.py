"""How stages report progress: `progress(stage, done, total)`; the CLI draws bars from it."""

from __future__ import annotations

from collections.abc import Callable

#: progress(stage, done, total): the library never prints.
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The default when nobody is watching."""
    return None
