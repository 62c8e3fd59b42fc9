"""Compile configuration: frozen dataclasses, validated early.

`None` means "the default for this model/target", so a user who types only
`edgec compile mobilenet_v2` gets sensible behaviour, and a config file or
flags override one field at a time.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from compiler.ground.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8", "auto")
REPORT_FORMATS = ("json", "md", "html")
ARTIFACT_FORMATS = ("onnx", "ort", "engine")


@dataclass(frozen=True)
class Budgets:
    """CI budgets; a None field is not judged."""

    max_size_mb: float | None = None
    #: the artifact gzip-compressed (what a download or an OTA update moves)
    max_compressed_size_mb: float | None = None
    max_latency_ms: float | None = None
    max_p99_latency_ms: float | None = None
    #: FP32 baseline p50 / artifact p50, paired in the same run
    min_speedup: float | None = None
    min_accuracy: float | None = None
    #: logit SQNR of the judged output against FP32, in dB (10 log10 signal / noise)
    min_sqnr_db: float | None = None
    #: FP32's accuracy minus the artifact's (label accuracy with labels, else 1 - agreement
    #: or 1 - cosine)
    max_accuracy_drop: float | None = None
    #: peak resident memory of a process running the artifact (compiler.memory)
    max_memory_mb: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, int | float) or v < 0):
                raise UsageError(f"--{f.name.replace('_', '-')} must be a non-negative number")
        for name in ("min_accuracy", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and value > 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} is a fraction between 0 and 1 (e.g. 0.95)")

    @property
    def judges_accuracy(self) -> bool:
        """An accuracy budget is set: the run need not warn of a far-off model itself."""
        return self.min_accuracy is not None or self.min_sqnr_db is not None


@dataclass(frozen=True)
class CompileConfig:
    """Everything `compile()` needs; the CLI only builds one of these."""

    model: str
    target: str = "cpu"
    #: --device PROFILE: the board whose defaults sit under config files and flags
    #: (compiler.devices); recorded here so that --package knows the board
    device: str | None = None
    precision: str = "fp32"
    input_shape: tuple[int, ...] | None = None
    #: --input-shape NAME:DIMS (repeatable): per-input shapes for data and timing
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: --dim NAME=N: sizes for named dynamic dimensions (the artifact keeps them dynamic)
    dims: tuple[tuple[str, int], ...] = ()
    out_dir: Path | None = None
    #: None: the target's own default (onnx for onnxruntime targets, engine for TensorRT)
    artifact_format: str | None = None
    threads: int | None = None
    batch: int = 1
    eval_source: str | None = None
    #: --output NAME: the output gates and the summary judge (None: the first)
    output: str | None = None
    eval_samples: int | None = None
    calib_source: str | None = None
    calib_method: str | None = None
    #: --quant-mode static|dynamic (None: static); dynamic only where the target runs it
    quant_mode: str | None = None
    calib_samples: int | None = None
    prune_ratio: float | None = None
    prune_mode: str | None = None
    finetune_epochs: int | None = None
    keep_io_types: bool = False
    qat: bool = False
    epochs: int | None = None
    lr: float | None = None
    resume: bool = False
    auto_fallback: bool = False
    #: --fallback-speedup-kept: the fraction of all-INT8's latency saving over FP32 that
    #: --auto-fallback must keep (None: PtqOptions' default, 0.8; 0: no latency bound)
    fallback_speedup_kept: float | None = None
    #: --int8-overflow 7bit|uint8|off: the remedy for layers whose u8s8 kernel overflows
    #: on this CPU (None: PtqOptions' default, 7bit)
    int8_overflow: str | None = None
    sensitivity: bool = False
    verify: bool = False
    budgets: Budgets = field(default_factory=Budgets)
    reports: tuple[str, ...] = REPORT_FORMATS
    junit: Path | None = None
    opset: int = 17
    torch_baseline: bool = True
    seed: int = 0
    #: --quiet: the CLI draws no progress bars (the library never draws any)
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.artifact_format is not None and self.artifact_format not in ARTIFACT_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(ARTIFACT_FORMATS)}")
        bad = [r for r in self.reports if r not in REPORT_FORMATS]
        if bad:
            raise UsageError(f"unknown report format {bad[0]!r}; use any of json,md,html")
        if self.batch < 1:
            raise UsageError("--batch must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        for name, size in self.dims:
            if not name or not isinstance(size, int) or size < 1:
                raise UsageError(
                    f"--dim {name}={size}: give a name and a positive size, e.g. seq=128"
                )
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise UsageError("--input-shape dimensions must be positive integers, e.g. 1,3,224,224")
        for name in ("eval_samples", "calib_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        _validate_prune(self.prune_mode, self.prune_ratio, self.finetune_epochs)
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise UsageError("--finetune-epochs must be at least 1")
        if self.calib_method is not None:
            from passes.quantize.calibrate import METHODS  # loads onnx_ir: only when named

            if self.calib_method not in METHODS:
                raise UsageError(f"--calib-method must be one of {', '.join(METHODS)}")
        if self.int8_overflow not in (None, "7bit", "uint8", "off"):
            raise UsageError("--int8-overflow must be one of 7bit, uint8, off")
        _validate_quant_mode(self.quant_mode, self.precision, self.qat)
        if (self.auto_fallback or self.sensitivity) and self.precision not in ("int8", "auto"):
            raise UsageError("--auto-fallback and --sensitivity apply to --precision int8 or auto")
        if self.fallback_speedup_kept is not None:
            if not self.auto_fallback:
                raise UsageError("--fallback-speedup-kept bounds --auto-fallback: add it")
            if not 0 <= self.fallback_speedup_kept <= 1:
                raise UsageError(
                    "--fallback-speedup-kept is a fraction between 0 and 1 (e.g. 0.8: keep "
                    "80% of the time INT8 saves over FP32)"
                )
        if (self.epochs is not None or self.lr is not None or self.resume) and not self.qat:
            raise UsageError("--epochs, --lr and --resume apply to --qat")
        if self.keep_io_types and self.precision != "fp16":
            raise UsageError("--keep-io-types applies to --precision fp16")
        if self.qat and self.precision != "int8":
            raise UsageError("--qat trains for INT8: use it with --precision int8")
        if self.qat and self.auto_fallback:
            raise UsageError(
                "--auto-fallback keeps layers in float after post-training quantization, but "
                "--qat trains every quantized layer in int8: drop --auto-fallback (the "
                "--min-accuracy gate still judges the result) or drop --qat"
            )
        if self.qat and self.sensitivity:
            raise UsageError(
                "--sensitivity reports post-training quantization's per-layer sensitivity and "
                "does not apply to --qat: drop it, or run --precision int8 without --qat"
            )
        if self.epochs is not None and self.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise UsageError("--lr must be positive")
        if not 13 <= self.opset <= 21:
            raise UsageError("--opset must be between 13 and 21")


QUANT_MODES = ("static", "dynamic")


def _validate_quant_mode(mode: str | None, precision: str, qat: bool) -> None:
    """--quant-mode: a known mode, for an INT8 run, not with --qat (which trains Q/DQ)."""
    if mode is None:
        return
    if mode not in QUANT_MODES:
        raise UsageError(f"--quant-mode must be one of {', '.join(QUANT_MODES)}")
    if precision not in ("int8", "auto"):
        raise UsageError("--quant-mode applies to --precision int8 or auto")
    if qat and mode == "dynamic":
        raise UsageError(
            "--qat trains static Q/DQ quantization: drop --quant-mode dynamic or drop --qat"
        )


def _validate_prune(mode: str | None, ratio: float | None, finetune_epochs: int | None) -> None:
    """--prune, --prune-mode and --finetune-epochs: one pruning request that makes sense."""
    if mode is None and ratio is None and finetune_epochs is None:
        return
    if mode is not None:
        from passes.prune import PRUNE_MODES  # loads onnx_ir: only when a mode is named

        if mode not in PRUNE_MODES:
            raise UsageError(f"--prune-mode must be one of {', '.join(PRUNE_MODES)}")
    if mode != "2:4" and ratio is None:
        raise UsageError("--prune RATIO is required (a fraction in [0, 1), e.g. 0.3)")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise UsageError("--prune RATIO must be a fraction in [0, 1), e.g. 0.3")
    if finetune_epochs is not None and (mode or "unstructured") != "channel":
        raise UsageError("--finetune-epochs applies to --prune-mode channel")


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' → (1, 3, 224, 224)."""
    parts = text.replace("x", ",").replace(" ", "").strip(",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        raise UsageError(
            f"--input-shape {text!r} is not a list of integers like 1,3,224,224"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input-shape {text!r} must list positive integers like 1,3,224,224")
    return shape


def split_input_shapes(
    items: str | Sequence[str],
) -> tuple[tuple[int, ...] | None, tuple[tuple[str, tuple[int, ...]], ...]]:
    """`--input-shape` values → (the bare shape, the named ones): '1,3,224,224' is the
    shape of a single-input model's input, 'input_ids:1,128' names the input it shapes."""
    bare: list[tuple[int, ...]] = []
    named: dict[str, tuple[int, ...]] = {}
    for item in [items] if isinstance(items, str) else items:
        name, sep, dims = str(item).rpartition(":")
        if not sep:
            bare.append(parse_shape(dims))
        elif not name.strip():
            raise UsageError(f"--input-shape {item!r}: give NAME:DIMS, e.g. input_ids:1,128")
        elif name.strip() in named:
            raise UsageError(f"--input-shape names input {name.strip()!r} twice")
        else:
            named[name.strip()] = parse_shape(dims)
    if len(bare) > 1 or (bare and named):
        raise UsageError(
            "give --input-shape once for a single-input model, or NAME:DIMS for each input "
            "you shape, e.g. --input-shape input_ids:1,128"
        )
    return (bare[0] if bare else None), tuple(named.items())


def parse_dim(text: str) -> tuple[str, int]:
    """'seq=128' → ("seq", 128)."""
    name, sep, size = text.partition("=")
    if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
        raise UsageError(f"--dim {text!r} is not NAME=N with a positive N, e.g. seq=128")
    return name.strip(), int(size)


#: flags that are not settings of a run (they say where to read or how to print)
_NOT_SETTINGS = frozenset({"config_file", "as_json", "no_torch_baseline", "package", "verbose"})
#: where `edgec compile` looks for settings when --config is not given
DISCOVERED = ("edgec.toml", "pyproject.toml")


def load_config_file(
    path: Path, *, flags: Mapping[str, str] | None = None, model: str | None = None
) -> dict[str, Any]:
    """Settings from TOML or JSON whose keys are the long flag names (`max-size-mb`, `out`,
    `calib`, `report`, `dim`, `input-shape`; field names work too). `pyproject.toml` keeps
    them under `[tool.edgec]`. A `[models.NAME]` section (NAME: the zoo name or the model
    file's stem) overrides the top-level values for that model. An unknown key exits 2
    listing the valid ones."""
    data = _read_settings(Path(path))
    sections = data.pop("models", None) or {}
    if not isinstance(sections, dict):
        raise UsageError(f"config file {path}: [models] must hold one table per model name")
    if model is not None:
        names = {model, Path(model).stem, Path(model).name}
        for name, section in sections.items():
            if name in names and isinstance(section, dict):
                data = {**data, **section}
    return _to_fields(data, dict(flags or {}), path)


def settings_file(path: Path) -> dict[str, Any]:
    """A config file's raw table (keys as written; `[tool.edgec]` of a pyproject.toml), for a
    command that takes keys of its own before `settings_of` (edgec sweep's axes)."""
    return _read_settings(Path(path))


def settings_of(data: dict[str, Any], flags: Mapping[str, str], path: Path) -> dict[str, Any]:
    """`load_config_file` for a table already read: flag names → field names, exit 2 on an
    unknown key."""
    return _to_fields(dict(data), dict(flags), path)


def discover_config(directory: Path) -> Path | None:
    """`edgec.toml`, else a `pyproject.toml` with a `[tool.edgec]` table, in `directory`."""
    for name in DISCOVERED:
        candidate = directory / name
        if not candidate.is_file():
            continue
        if name == "edgec.toml":
            return candidate
        try:
            if "edgec" in (tomllib.loads(candidate.read_text()).get("tool") or {}):
                return candidate
        except (OSError, tomllib.TOMLDecodeError):
            return None
    return None


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML/JSON: {e}") from None
    if path.name == "pyproject.toml":
        data = (data.get("tool") or {}).get("edgec") or {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a table of settings")
    return data


def _to_fields(data: dict[str, Any], flags: dict[str, str], path: Path) -> dict[str, Any]:
    """Flag names (with - or _) and field names → CompileConfig/Budgets field names."""
    field_names = {f.name for f in fields(CompileConfig)} | {f.name for f in fields(Budgets)}
    accepted = {name: name for name in field_names}
    for flag, name in flags.items():
        if name not in _NOT_SETTINGS:
            accepted[flag] = accepted[flag.replace("-", "_")] = name
    accepted["dim"] = "dims"  # the flag is --dim (repeatable); the field holds them all
    accepted.pop("model", None)
    accepted.pop("budgets", None)
    out: dict[str, Any] = {}
    for key, value in data.items():
        field_name = accepted.get(key) or accepted.get(key.replace("-", "_"))
        if field_name is None:
            by_flag = {f for f, n in flags.items() if n not in _NOT_SETTINGS}
            unflagged = field_names - set(flags.values()) - {"model", "budgets"}
            valid = sorted(by_flag | unflagged | {"dim"})
            raise UsageError(
                f"config file {path} has unknown key {key!r}; valid keys: {', '.join(valid)}"
            )
        out[field_name] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> CompileConfig:
    """Build a CompileConfig from config-file values overridden by explicit flags."""
    values = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    budget_names = {f.name for f in fields(Budgets)}
    budgets = Budgets(**{k: values.pop(k) for k in list(values) if k in budget_names})
    if "out_dir" in values:
        values["out_dir"] = Path(values["out_dir"])
    if "junit" in values and values["junit"] is not None:
        values["junit"] = Path(values["junit"])
    shape = values.get("input_shape")
    if isinstance(shape, str) or (
        isinstance(shape, list | tuple) and shape and all(isinstance(x, str) for x in shape)
    ):
        values["input_shape"], named = split_input_shapes(shape)
        values["input_shapes"] = named or values.get("input_shapes", ())
    elif shape is not None:
        values["input_shape"] = tuple(shape)
    if values.get("dims"):
        dims = values["dims"]
        items = dims.items() if isinstance(dims, dict) else dims
        values["dims"] = tuple(
            parse_dim(d) if isinstance(d, str) else (str(d[0]), int(d[1])) for d in items
        )
    if isinstance(values.get("reports"), str):
        values["reports"] = tuple(r.strip() for r in values["reports"].split(",") if r.strip())
    if "model" not in values:
        raise UsageError("no MODEL given")
    return replace(CompileConfig(model=values.pop("model")), budgets=budgets, **values)
