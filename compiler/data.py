"""Evaluation data and example feeds for a run.

Zoo models bring their own held-out set; `--eval PATH` takes `.npy`/`.npz`
files, or a `.txt` file of sentences (one a line) for a zoo text model, which
its own tokenizer reads; anything else is judged on seeded random inputs of the
declared shape (agreement with the FP32 original still means something there;
label accuracy does not exist).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import onnx

from compiler.ground.errors import InvalidInput, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from compiler.config import CompileConfig
    from compiler.sources import ModelSource
    from models.spec import ModelSpec

_NP_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}
#: a --calib/--eval file with this suffix holds sentences (text models), one a line
TEXT_SUFFIX = ".txt"
# Refuse inputs whose declared shape would need absurd memory for one sample.
_MAX_SAMPLE_BYTES = 1 << 30


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int, ...]  # batch-1 concrete shape
    dtype: np.dtype
    #: integer inputs: random values are drawn from [0, high) (an embedding table's rows)
    high: int = 2


@dataclass(frozen=True)
class EvalSet:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    @property
    def samples(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def graph_inputs(
    proto: onnx.ModelProto,
    input_shape: tuple[int, ...] | None = None,
    dims: Mapping[str, int] | None = None,
    named_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> list[InputInfo]:
    """Concrete batch-1 shapes of the graph's real inputs (initializers excluded).

    An input named in `named_shapes` (`--input-shape NAME:DIMS`) takes that shape;
    a dynamic axis other than the batch takes its size from `dims` (`--dim NAME=N`,
    by the axis's dim_param). The model itself keeps its axes dynamic.
    """
    inits = {i.name for i in proto.graph.initializer}
    dims = dict(dims or {})
    _check_dim_names(proto, dims)
    named = dict(named_shapes or {})
    _check_named_shapes(proto, named)
    index_ranges = embedding_rows(proto)
    infos = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type not in _NP_DTYPES:
            raise InvalidInput(f"input {vi.name!r} has an unsupported element type {tt.elem_type}")
        if vi.name in named:
            shape = (1, *named[vi.name][1:])
        elif input_shape is not None:
            shape = (1, *input_shape[1:])
        else:
            shape_list = []
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape_list.append(1 if axis == 0 else d.dim_value)
                elif axis == 0:
                    shape_list.append(1)
                elif d.dim_param in dims:
                    shape_list.append(dims[d.dim_param])
                else:
                    hint = (
                        f"give --dim {d.dim_param}=N"
                        if d.dim_param
                        else f"give --input-shape {vi.name}:DIMS"
                    )
                    raise UsageError(
                        f"input {vi.name!r} has a dynamic dimension at axis {axis}: {hint}"
                    )
            shape = tuple(shape_list)
        dtype = np.dtype(_NP_DTYPES[tt.elem_type])
        if int(np.prod(shape)) * dtype.itemsize > _MAX_SAMPLE_BYTES:
            raise InvalidInput(
                f"input {vi.name!r} declares shape {shape}, over 1 GiB per sample; refusing to allocate"
            )
        high = index_ranges.get(vi.name, 2)
        infos.append(InputInfo(vi.name, shape, dtype, high))
    if not infos:
        raise InvalidInput("the model has no inputs to feed")
    return infos


#: ops an index passes through unchanged on its way to a Gather
_INDEX_PASSTHROUGH = frozenset({"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def embedding_rows(proto: onnx.ModelProto) -> dict[str, int]:
    """For each graph input that indexes an embedding table (a Gather on axis 0 of an
    initializer, possibly through Cast/Reshape/...): the table's row count (the smallest,
    when it indexes several). Random ids drawn below it are valid token ids."""
    tables = {t.name: int(t.dims[0]) for t in proto.graph.initializer if t.dims}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    rows: dict[str, int] = {}
    for vi in proto.graph.input:
        frontier, seen = [vi.name], set()
        while frontier:
            value = frontier.pop()
            seen.add(value)
            for node in readers.get(value, []):
                if node.op_type in _INDEX_PASSTHROUGH and node.input[0] == value:
                    frontier.extend(o for o in node.output if o not in seen)
                elif (
                    node.op_type == "Gather"
                    and len(node.input) > 1
                    and node.input[1] == value
                    and node.input[0] in tables
                    and all(a.i == 0 for a in node.attribute if a.name == "axis")
                ):
                    rows[vi.name] = min(
                        rows.get(vi.name, tables[node.input[0]]), tables[node.input[0]]
                    )
    return rows


def _check_named_shapes(proto: onnx.ModelProto, named: Mapping[str, tuple[int, ...]]) -> None:
    """Each `--input-shape NAME:DIMS` names a real input, with its rank, and agrees with
    the dims the model fixes (the batch axis excepted)."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = {vi.name: vi for vi in proto.graph.input if vi.name not in inits}
    for name, shape in named.items():
        if name not in inputs:
            raise UsageError(
                f"--input-shape {name}:...: the model has no input {name!r}; "
                f"its inputs: {', '.join(inputs)}"
            )
        declared = inputs[name].type.tensor_type.shape.dim
        if len(declared) != len(shape):
            raise InvalidInput(
                f"--input-shape {name}:{','.join(map(str, shape))} has rank {len(shape)} but "
                f"input {name!r} has rank {len(declared)}"
            )
        for axis, (d, want) in enumerate(zip(declared, shape, strict=True)):
            if axis and d.HasField("dim_value") and d.dim_value not in (0, want):
                raise InvalidInput(
                    f"--input-shape {name}: axis {axis} is {want} but the model fixes it at "
                    f"{d.dim_value}"
                )


def dim_names(proto: onnx.ModelProto) -> list[str]:
    """The named dynamic dimensions (dim_params) of the graph's inputs, in order of first use."""
    names: dict[str, None] = {}
    for vi in proto.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param:
                names[d.dim_param] = None
    return list(names)


def _check_dim_names(proto: onnx.ModelProto, dims: Mapping[str, int]) -> None:
    """--dim names must be dim_params of the model's inputs (UsageError listing them)."""
    known = dim_names(proto)
    unknown = [n for n in dims if n not in known]
    if unknown:
        listed = ", ".join(known) if known else "none: every input dimension is fixed"
        raise UsageError(
            f"--dim {unknown[0]}: the model's inputs have no such dimension ({listed})"
        )


def fixed_batch(proto: onnx.ModelProto, batch: int) -> int | None:
    """The batch size the model fixes on axis 0 of its inputs, or None when it is dynamic.

    A model exported with a static batch (often 1) can only be fed batches of exactly
    that size: evaluation then streams in batches of it, and `batch` (--batch, the
    latency batch) must match it (UsageError otherwise).
    """
    inits = {i.name for i in proto.graph.initializer}
    sizes = {
        vi.type.tensor_type.shape.dim[0].dim_value
        for vi in proto.graph.input
        if vi.name not in inits
        and vi.type.tensor_type.shape.dim
        and vi.type.tensor_type.shape.dim[0].HasField("dim_value")
        and vi.type.tensor_type.shape.dim[0].dim_value > 0
    }
    if not sizes:
        return None
    if len(sizes) > 1:
        raise InvalidInput(
            f"the model's inputs fix different batch sizes {sorted(sizes)} on axis 0"
        )
    size = sizes.pop()
    if batch != size:
        raise UsageError(
            f"the model fixes its batch dimension at {size}; run with --batch {size} "
            "(or re-export it with a dynamic batch axis)"
        )
    return size


def whole_batches(evalset: EvalSet, batch: int) -> EvalSet:
    """The evaluation set cut to a multiple of a fixed `batch` (InvalidInput if shorter)."""
    n = evalset.samples
    keep = n - n % batch
    if keep == n:
        return evalset
    if keep == 0:
        raise InvalidInput(
            f"evaluation data has {n} samples; the model's fixed batch of {batch} needs at least {batch}"
        )
    labels = evalset.labels[:keep] if evalset.labels is not None else None
    return EvalSet({k: v[:keep] for k, v in evalset.inputs.items()}, labels, evalset.source)


def random_feeds(infos: list[InputInfo], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: normal floats; integers uniform in [0, high) (token ids below their
    embedding table's rows; 0/1, as masks and flags, for other integer inputs); bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in infos:
        shape = (batch, *info.shape[1:])
        if np.issubdtype(info.dtype, np.floating):
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
        elif info.dtype == np.bool_:
            feeds[info.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[info.name] = rng.integers(0, info.high, shape).astype(info.dtype)
    return feeds


def random_description(infos: list[InputInfo], seed: int) -> str:
    """What seeded random data was, for the report: floats, and each integer input's range."""
    parts = (
        ["random normal floats"] if any(np.issubdtype(i.dtype, np.floating) for i in infos) else []
    )
    for i in infos:
        if np.issubdtype(i.dtype, np.integer):
            parts.append(f"{i.name} uniform in [0, {i.high})")
        elif i.dtype == np.bool_:
            parts.append(f"{i.name} random bools")
    return f"{', '.join(parts)} (seed {seed})"


def evaluation_set(
    infos: list[InputInfo],
    *,
    zoo_spec: ModelSpec | None,
    eval_arg: str | None,
    samples: int | None,
    seed: int = 0,
) -> EvalSet:
    """The held-out set a run measures accuracy on (see module docstring)."""
    if eval_arg in (None, "zoo") and zoo_spec is not None:
        n = samples or zoo_spec.default_eval_samples
        x, labels = zoo_spec.evaluation_data(n)
        data = dict(x) if isinstance(x, Mapping) else {infos[0].name: x}
        src = f"zoo:{zoo_spec.name} held-out set"
    elif eval_arg == "zoo":
        raise UsageError("--eval zoo needs a zoo model; give --eval PATH (.npy/.npz) instead")
    elif eval_arg is None or eval_arg == "random":
        n = samples or 16
        return EvalSet(random_feeds(infos, n, seed), None, random_description(infos, seed))
    elif is_text_file(eval_arg):
        tokenize = text_tokenizer(zoo_spec, "--eval", eval_arg)
        data, labels = tokenize(read_sentences(Path(eval_arg))[:samples]), None
        src = str(eval_arg)
    else:
        data, labels = load_arrays(Path(eval_arg), infos)
        if samples is not None:
            data = {k: v[:samples] for k, v in data.items()}
            labels = labels[:samples] if labels is not None else None
        src = str(eval_arg)
    validate_arrays(data, infos, what="evaluation data")
    return EvalSet(data, labels, src)


def is_text_file(arg: str | None) -> TypeGuard[str]:
    """A `--calib`/`--eval` PATH ending in .txt: sentences for a text model, one a line."""
    return arg is not None and Path(arg).suffix.lower() == TEXT_SUFFIX


def text_tokenizer(
    spec: ModelSpec | None, flag: str, arg: str
) -> Callable[[list[str]], dict[str, np.ndarray]]:
    """The zoo model's tokenizer for a text file; UsageError when the model reads no text."""
    tokenize = spec.tokenize if spec is not None else None
    if tokenize is None:
        model = spec.name if spec is not None else "this model"
        raise UsageError(
            f"{flag} {arg} is a text file, but {model} is not a text model; "
            "give a .npy/.npz of its inputs instead"
        )
    return tokenize


def read_sentences(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped (InvalidInput: missing, unreadable, empty)."""
    if not path.is_file():
        raise InvalidInput(f"text file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{path} is not UTF-8 text; save it as UTF-8, one sentence a line"
        ) from None
    except OSError as e:
        raise InvalidInput(f"{path} is not readable ({type(e).__name__})") from None
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise InvalidInput(f"text file {path} has no sentences (one sentence a line)")
    return sentences


def load_arrays(
    path: Path, infos: list[InputInfo]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read `.npy` (single-input models) or `.npz` (one array per input name, optional `labels`)."""
    if not path.exists():
        raise InvalidInput(f"data file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InvalidInput(
            f"{path} is not a readable .npy/.npz file ({_unreadable_because(e)})"
        ) from None
    if isinstance(loaded, np.ndarray):
        if len(infos) != 1:
            raise InvalidInput(
                f"{path}: a .npy file feeds single-input models; use .npz keyed by input name"
            )
        return {infos[0].name: loaded}, None
    with loaded:
        keys = set(loaded.files)
        labels = _npz_member(loaded, "labels", path) if "labels" in keys else None
        data = {}
        for info in infos:
            key = (
                info.name
                if info.name in keys
                else ("input" if len(infos) == 1 and "input" in keys else None)
            )
            if key is None:
                raise InvalidInput(
                    f"{path} has no array named {info.name!r} (has: {', '.join(sorted(keys))})"
                )
            data[info.name] = _npz_member(loaded, key, path)
    return data, labels


def _npz_member(loaded: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of a .npz (members are read lazily, so errors surface here)."""
    try:
        return loaded[key]
    except Exception as e:
        raise InvalidInput(
            f"{path}: array {key!r} is not readable ({_unreadable_because(e)})"
        ) from None


def _unreadable_because(e: Exception) -> str:
    """Why numpy could not load an array, for the one-line error."""
    if "allow_pickle" in str(e):
        return "it holds pickled Python objects, which edgec does not load"
    return type(e).__name__


def validate_arrays(data: dict[str, np.ndarray], infos: list[InputInfo], *, what: str) -> None:
    """Shape, dtype and finiteness checks with one-line messages."""
    counts = set()
    for info in infos:
        arr = data[info.name]
        if arr.ndim != len(info.shape) or tuple(arr.shape[1:]) != tuple(info.shape[1:]):
            raise InvalidInput(
                f"{what} for {info.name!r} has shape {tuple(arr.shape)}; the model expects "
                f"(N, {', '.join(map(str, info.shape[1:]))})"
            )
        if arr.dtype != info.dtype:
            if np.issubdtype(info.dtype, np.floating) and np.issubdtype(arr.dtype, np.floating):
                data[info.name] = arr.astype(info.dtype)
            else:
                raise InvalidInput(
                    f"{what} for {info.name!r} is {arr.dtype}; the model expects {info.dtype}"
                )
        if arr.shape[0] == 0:
            raise InvalidInput(f"{what} for {info.name!r} has no samples")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise InvalidInput(f"{what} for {info.name!r} contains NaN or Inf")
        counts.add(arr.shape[0])
    if len(counts) > 1:
        raise InvalidInput(f"{what}: inputs have different sample counts {sorted(counts)}")


def training_inputs(
    config: CompileConfig, source: ModelSource, *, finetune: bool = False
) -> np.ndarray:
    """Unlabeled training data for fine-tuning: the calibration side of the zoo, or --calib.
    Without --calib-samples, recovery fine-tuning (`finetune`) reads the zoo entry's
    `default_finetune_samples`, QAT and calibration its `default_calib_samples`."""
    spec = source.zoo_spec
    if config.calib_source not in (None, "zoo"):
        dims = {**source.default_dims, **dict(config.dims)}
        infos = graph_inputs(source.proto, config.input_shape, dims, dict(config.input_shapes))
        data, _ = load_arrays(Path(config.calib_source), infos)
        validate_arrays(data, infos, what="training data")
        return next(iter(data.values()))
    if spec is None:
        raise UsageError(
            "--finetune-epochs on a module:factory source needs --calib PATH (.npy/.npz)"
        )
    default = spec.default_calib_samples
    if finetune and spec.default_finetune_samples is not None:
        default = spec.default_finetune_samples
    samples = spec.calibration_data(config.calib_samples or default)
    if isinstance(samples, Mapping):
        raise UsageError(f"fine-tuning supports single-input models; {spec.name} has several")
    return samples
