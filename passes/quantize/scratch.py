"""A reusable float32 buffer for the large temporaries of the statistics passes.

A fresh tensor of tens of megabytes is mapped anew by the allocator and pays a page
fault for each of its pages on first write (about 10 ms for 38 MB on the 2-core
machines here; glibc maps every allocation above 32 MB). The range search and the
depthwise Hessians make hundreds of such temporaries of a few shapes in one pass;
taking them from one buffer that grows to the largest pays that once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Scratch:
    """One growing float32 buffer; `take` hands out views of its start. A view is valid
    until the next `take`: callers finish with it (or copy out) before asking again."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialized contiguous float32 tensor of `shape`."""
        import torch

        size = math.prod(shape)
        if self._buffer is None or self._buffer.numel() < size:
            self._buffer = None  # release the smaller one first
            self._buffer = torch.empty(size, dtype=torch.float32)
        return self._buffer[:size].view(shape)
