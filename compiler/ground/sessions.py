"""The one place onnxruntime sessions are made.

Every stage runs models through onnxruntime: the runners of `targets/`, the
calibration and sensitivity runs of `passes/quantize`, the numerical checks of
`passes/verify`, the conformance suite. They differ only in a few knobs, so
they share one options builder and one constructor, and a change (a log
level, spinning, the arena) is made once. onnxruntime is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime as ort

#: "all": every graph optimization (the deployed kernels); "none": the model's exact arithmetic.
Level = Literal["all", "extended", "basic", "none"]

CPU = ("CPUExecutionProvider",)


def session_options(
    *,
    threads: int | None = None,
    level: Level = "all",
    log_severity: int = 3,
    spinning: bool = True,
    mem_arena: bool = True,
) -> ort.SessionOptions:
    """Sequential execution, one inter-op thread, `threads` intra-op (None/0: onnxruntime's
    default, the physical cores).

    `spinning=False` keeps idle workers from spinning between calls (analysis
    code does numpy/torch work between them); `mem_arena=False` hands memory
    back after each run (sessions that fetch many intermediate tensors).
    """
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[level]
    opts.log_severity_level = log_severity
    opts.enable_cpu_mem_arena = mem_arena
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def open_session(
    model: bytes | str | os.PathLike[str],
    options: ort.SessionOptions | None = None,
    *,
    providers: Sequence[str] = CPU,
    provider_options: Sequence[Mapping[str, str]] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on a serialized model or a file; onnxruntime's own errors propagate.

    `provider_options`, when given, holds one dict of options per provider, in
    `providers` order (e.g. the CUDA provider's `use_tf32`).
    """
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else os.fspath(model)
    opts = options or session_options()
    if provider_options is None:
        return ort.InferenceSession(source, opts, providers=list(providers))
    return ort.InferenceSession(
        source,
        opts,
        providers=list(providers),
        provider_options=[dict(o) for o in provider_options],
    )
