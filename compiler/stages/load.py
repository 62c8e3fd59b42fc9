"""The load stage: the FP32 original, its inputs and the held-out evaluation set.

Cheap, so it runs before anything expensive: a wrong path, shape or data file
fails here in seconds. A model exported with a static batch takes exactly that
many samples per run, so the evaluation set is cut to whole batches of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.config import CompileConfig
from compiler.data import (
    EvalSet,
    InputInfo,
    evaluation_set,
    fixed_batch,
    graph_inputs,
    whole_batches,
)
from compiler.ground.errors import UsageError
from compiler.sources import ModelSource, resolve
from compiler.stages.model_checks import check_loads_in_onnxruntime, nonfinite_weights
from compiler.stages.progress import Progress

#: Samples per evaluation run when the model does not fix its batch.
EVAL_BATCH = 16


@dataclass(frozen=True)
class Loaded:
    """What every later stage reads about the source."""

    source: ModelSource
    inputs: list[InputInfo]
    evalset: EvalSet
    eval_batch: int
    #: the batch size the model fixes on axis 0 (every stage that runs it must feed exactly that)
    static_batch: int | None
    #: what the report and summary must say about the source (NaN/Inf weights)
    warnings: tuple[str, ...] = ()


def load(config: CompileConfig, progress: Progress) -> Loaded:
    """Resolve MODEL (zoo name, .onnx file, module:factory) and its evaluation data."""
    progress("load", 0, 1)
    source = resolve(config.model, input_shape=config.input_shape, opset=config.opset)
    if source.kind == "onnx":
        check_loads_in_onnxruntime(source.proto, source.name)
    warnings = tuple(nonfinite_weights(source.proto))
    _check_output_name(config.output, source)
    progress("load", 1, 1)
    # a zoo model's named dynamic axes default to the sizes of its own data
    dims = {**source.default_dims, **dict(config.dims)}
    infos = graph_inputs(source.proto, config.input_shape, dims, dict(config.input_shapes))
    static_batch = fixed_batch(source.proto, config.batch)
    evalset = evaluation_set(
        infos,
        zoo_spec=source.zoo_spec,
        eval_arg=config.eval_source,
        samples=config.eval_samples,
        seed=config.seed,
    )
    if static_batch:
        evalset = whole_batches(evalset, static_batch)
    return Loaded(source, infos, evalset, static_batch or EVAL_BATCH, static_batch, warnings)


def _check_output_name(name: str | None, source: ModelSource) -> None:
    """`--output NAME` must name one of the model's outputs (exit 2 listing them)."""
    outputs = [o.name for o in source.proto.graph.output]
    if name is not None and name not in outputs:
        raise UsageError(
            f"--output {name!r}: {source.name} has no output of that name; "
            f"its outputs: {', '.join(outputs)}"
        )
