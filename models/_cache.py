"""Trained-weight cache and deterministic training for the zoo's small models.

Models without downloadable weights are trained (or initialized) here, once, and
their state dict is cached on disk keyed by a hash of everything that determines
it (the recipe). Several test workers may build the same model at once, so the
file is written to a temporary name and renamed into place: a reader sees either
nothing or a complete file, never half of one. Cached files are loaded with
`weights_only=True` because the cache folder is just another place on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from compiler.ground.io import atomic_torch_save

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def cache_dir() -> Path:
    """`$EDGEC_CACHE/models`, or `~/.cache/edgec/models` when EDGEC_CACHE is unset."""
    root = os.environ.get("EDGEC_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgec"
    return base / "models"


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-serializable recipe (sorted keys)."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and one thread; restore everything after.

    One thread because reduction order changes with the thread count, and the
    global RNG is forked so building a model never disturbs the caller's seed.
    """
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn_only)
            torch.set_num_threads(prev_threads)


def load_or_create(
    name: str, recipe: Mapping[str, Any], create: Callable[[], StateDict]
) -> StateDict:
    """The cached state dict for (name, recipe), created and cached on a miss.

    A cache file that cannot be read (truncated by a full disk, tampered with)
    is logged and replaced rather than trusted.
    """
    path = cache_dir() / f"{name}-{recipe_key(recipe)}.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
                log.debug("loaded %s weights from cache %s", name, path)
                return state
            log.warning("cache file %s does not hold a state dict; rebuilding it", path)
        except Exception as e:  # unpickling errors vary by torch version
            log.warning("cannot read cache file %s (%s); rebuilding it", path, e)
    log.info("building %s weights (not cached yet at %s)", name, path)
    state = {k: v.detach().clone().contiguous() for k, v in create().items()}
    try:
        atomic_torch_save(state, path)
    except OSError as e:
        log.warning("cannot write cache file %s (%s); continuing without caching", path, e)
    return state
