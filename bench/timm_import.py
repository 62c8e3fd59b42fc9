"""`timm` for the corpus, on a CPU torch that has no matching torchvision.

timm imports torchvision at import time (`torchvision.ops.misc.FrozenBatchNorm2d`,
`torchvision.transforms`, `torchvision.datasets`). The only torchvision wheels for
torch 2.13 on the package registry are CUDA builds; installed next to the CPU torch
they break the whole environment: their compiled `_C` library needs libtorch_cuda,
torchvision tolerates that (its ops report `_has_ops() == False`), but its
`_meta_registrations` then registers fake kernels for `torchvision::nms`/`qnms`,
ops that only `_C` declares, and `import torchvision` raises RuntimeError, which
also breaks `from transformers import BertModel` (transformers sees torchvision's
metadata and imports it).

So `make install` puts that wheel (no dependencies) in a private folder,
`.venv/timm-torchvision`, that nothing imports by default; `load_timm` adds it to
`sys.path` and, on a CPU torch only, first declares the two op schemas `_C` would
have declared (no kernels: calling `torchvision.ops.nms` still raises
torchvision's own "Couldn't load custom C++ ops"). Everything timm uses from
torchvision is then torchvision's own pure-Python code. Where a torchvision that
imports is already installed (a CPU build matching torch), it is used as is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

#: where the Makefile installs the CUDA torchvision wheel, no dependencies
PRIVATE_TORCHVISION = Path(sys.prefix) / "timm-torchvision"

#: the schemas torchvision's `_meta_registrations` registers fake kernels for
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
#: kept alive: a torch.library.Library drops its definitions when collected
_LIBRARY: list[Any] = []


def load_timm() -> ModuleType:
    """`import timm`, through the private torchvision when no torchvision is installed;
    ModuleNotFoundError saying how to install it otherwise."""
    if importlib.util.find_spec("torchvision") is None:
        if not (PRIVATE_TORCHVISION / "torchvision").is_dir():
            raise ModuleNotFoundError(
                f"timm needs torchvision; run `make install` (it puts torchvision in "
                f"{PRIVATE_TORCHVISION})"
            )
        _declare_torchvision_ops()
        sys.path.append(str(PRIVATE_TORCHVISION))
    import timm

    return timm


def _declare_torchvision_ops() -> None:
    """On a CPU torch the CUDA wheel's `_C` cannot load: declare the op schemas it
    would have, once, so torchvision's import registers its fake kernels."""
    import torch

    if torch.version.cuda is not None or _LIBRARY:
        return
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARY.append(library)
