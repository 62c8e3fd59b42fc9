"""`edgec sweep`: many ordinary compiles, one per point of models × precisions × targets ×
pruning ratios × calibration methods, each into its own run folder.

A point's folder is named from its axes (`digits_cnn-int8-cpu-prune0.5`); a pruning
ratio of 0 compiles without pruning. The calibration axis applies to INT8 (and
auto) points only: an FP32 or FP16 point ignores it, so it is compiled once.
Compiles run in this process one after another, or as Ray tasks (`run_ray`:
`ray.remote(num_cpus=...)`, collected with `ray.get`; edgec owns no scheduler).
A failed compile is recorded — its exit code and one-line error — and the sweep
goes on.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compiler.compare import Row, failed_row, row_of
from compiler.config import CompileConfig, merge, settings_file, settings_of
from compiler.ground.errors import EdgecError, UsageError, first_line

log = logging.getLogger(__name__)

#: the sweep's axes: (key in --config and the flag name without dashes, CompileConfig field)
AXES = (
    ("model", "model"),
    ("precision", "precision"),
    ("target", "target"),
    ("prune", "prune_ratio"),
    ("calib-method", "calib_method"),
)
#: keys of a sweep file (--config) that are axes, and the axis each names
AXIS_KEYS = {
    "model": "model",
    "models": "model",
    "precision": "precision",
    "target": "target",
    "prune": "prune",
    "calib-method": "calib-method",
    "calib_method": "calib-method",
}
#: precisions that calibrate (the calibration-method axis applies to these only)
CALIBRATED = ("int8", "auto")
#: settings that apply to some precisions only: a point of another precision goes without
#: them (compile would warn that they are ignored, or refuse them)
PRECISION_SETTINGS = {
    "calib_source": ("int8", "auto", "fp16"),
    "calib_samples": ("int8", "auto", "fp16"),
    "quant_mode": CALIBRATED,
    "auto_fallback": CALIBRATED,
    "fallback_speedup_kept": CALIBRATED,
    "int8_overflow": CALIBRATED,
    "sensitivity": CALIBRATED,
    "keep_io_types": ("fp16",),
}


@dataclass(frozen=True)
class Point:
    """One compile of the sweep."""

    model: str
    precision: str
    target: str
    prune_ratio: float
    calib_method: str | None

    def name(self, *, with_prune: bool, with_calib: bool) -> str:
        """The run folder's name: model-precision-target[-pruneR][-method]."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.model.split(":")[-1]).stem or "model")
        parts = [stem, self.precision, self.target]
        if with_prune:
            parts.append(f"prune{self.prune_ratio:g}")
        if with_calib and self.calib_method:
            parts.append(self.calib_method)
        return "-".join(parts)


@dataclass(frozen=True)
class Job:
    """A point, its run folder's name, and the config to compile it with."""

    name: str
    point: Point
    config: CompileConfig


@dataclass(frozen=True)
class Outcome:
    """What one compile left: its report (None when it wrote none), exit code and error."""

    name: str
    report: dict[str, Any] | None
    exit_code: int = 0
    error: str | None = None


def split_list(value: Any) -> list[Any]:
    """A flag's "fp32,int8" or a TOML list (or scalar) → a list of values."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [v for item in value for v in split_list(item)]
    return [value]


def read_config(
    path: Path, flags: Mapping[str, str]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """A sweep file: its axes (`model`/`models`, `precision`, `target`, `prune`,
    `calib-method`; lists or "a,b" strings) and every other key as a compile setting
    (`flags`: the compile command's long flag names → field names)."""
    data = settings_file(path)
    axes = {AXIS_KEYS[k]: split_list(data.pop(k)) for k in list(data) if k in AXIS_KEYS}
    return axes, settings_of(data, flags, path)


def _ratios(values: Sequence[Any]) -> list[float]:
    try:
        ratios = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UsageError(f"--prune takes fractions in [0, 1), e.g. 0,0.5 (got {values})") from None
    if any(not 0.0 <= r < 1.0 for r in ratios):
        raise UsageError(f"--prune takes fractions in [0, 1), e.g. 0,0.5 (got {values})")
    return ratios


def points(axes: Mapping[str, Sequence[Any]]) -> list[Point]:
    """The product of the axes (each a list; missing or empty: the compile default), in
    order, without duplicates (the calibration axis only multiplies calibrated points)."""
    models = [str(m) for m in axes.get("model") or ()]
    if not models:
        raise UsageError("edgec sweep needs at least one MODEL")
    precisions = [str(p) for p in axes.get("precision") or ("fp32",)]
    targets = [str(t) for t in axes.get("target") or ("cpu",)]
    ratios = _ratios(axes.get("prune") or (0.0,))
    methods: list[str | None] = [str(m) for m in axes.get("calib-method") or ()] or [None]
    seen: dict[Point, None] = {}
    for model, precision, target, ratio, method in itertools.product(
        models, precisions, targets, ratios, methods
    ):
        point = Point(model, precision, target, ratio, method if precision in CALIBRATED else None)
        seen.setdefault(point, None)
    return list(seen)


def jobs(
    axes: Mapping[str, Sequence[Any]], settings: Mapping[str, Any], out_dir: Path
) -> list[Job]:
    """One Job per point; `settings` are compile settings (CompileConfig/Budgets field
    names) shared by every point, under the axes. A point whose flags do not make sense
    (e.g. an unknown precision) stops the sweep before any compile (exit 2)."""
    pts = points(axes)
    with_prune = bool(axes.get("prune"))
    with_calib = len(axes.get("calib-method") or ()) > 1
    out: list[Job] = []
    for p in pts:
        name = p.name(with_prune=with_prune, with_calib=with_calib)
        values = {
            "model": p.model,
            "precision": p.precision,
            "target": p.target,
            "prune_ratio": p.prune_ratio or None,
            "calib_method": p.calib_method,
            "out_dir": out_dir / name,
        }
        shared = {
            k: v
            for k, v in settings.items()
            if p.precision in PRECISION_SETTINGS.get(k, (p.precision,))
        }
        try:
            config = merge(shared, values)
        except UsageError as e:
            raise UsageError(f"sweep point {name}: {e}") from None
        out.append(Job(name, p, config))
    names = [j.name for j in out]
    if len(set(names)) != len(names):
        raise UsageError("two sweep points would share a run folder: give distinct model names")
    return out


def run_one(job: Job) -> Outcome:
    """Compile one point (in this process); never raises: failures become the Outcome."""
    from compiler.pipeline import compile_model

    try:
        result = compile_model(job.config)
    except EdgecError as e:
        return Outcome(job.name, None, e.exit_code, first_line(e))
    except Exception as e:  # a bug in one compile must not stop the sweep
        log.debug("sweep point %s failed", job.name, exc_info=True)
        return Outcome(job.name, None, 1, f"internal error ({type(e).__name__}: {first_line(e)})")
    failed = [g for g in result.gates if not g.passed]
    if failed:
        error = f"{len(failed)} of {len(result.gates)} budgets failed"
        return Outcome(job.name, result.report, 3, error)
    return Outcome(job.name, result.report)


def run_local(jobs: Sequence[Job], on_done: Callable[[Outcome], None]) -> list[Outcome]:
    """Every job in this process, in order."""
    outcomes = []
    for job in jobs:
        outcomes.append(run_one(job))
        on_done(outcomes[-1])
    return outcomes


RAY_HINT = "--ray needs Ray: pip install 'edgec[ray]'"


def run_ray(
    jobs: Sequence[Job],
    on_done: Callable[[Outcome], None],
    *,
    address: str | None = None,
    num_cpus: int = 2,
    cpus_per_task: int = 1,
) -> list[Outcome]:
    """Every job as a Ray task: on a local instance (`ray.init(num_cpus=...)`) or on the
    cluster at `address`. Run folders are written by the workers: on a cluster `--out`
    must be a shared path. Outcomes come back in job order."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_HINT) from None
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        if address is None:
            options["num_cpus"] = num_cpus
        else:
            options["address"] = address
        ray.init(**options)
    try:
        task = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_one)
        refs = {task.remote(job): job.name for job in jobs}
        by_name: dict[str, Outcome] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                outcome = ray.get(done[0])
            except Exception as e:  # the worker died (killed, out of memory): record it
                outcome = Outcome(refs[done[0]], None, 1, f"ray task failed: {first_line(e)}")
            by_name[outcome.name] = outcome
            on_done(outcome)
        return [by_name[job.name] for job in jobs]
    finally:
        if started:
            ray.shutdown()


def rows(jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> list[Row]:
    """The compare rows of a sweep: a report's figures, or the failure with its point."""
    out = []
    for job, o in zip(jobs, outcomes, strict=True):
        if o.report is not None:
            row = row_of(o.name, o.report, str(job.config.out_dir))
            out.append(replace(row, exit_code=o.exit_code, error=o.error))
        else:
            p = job.point
            out.append(
                failed_row(
                    o.name,
                    model=p.model,
                    precision=p.precision,
                    target=p.target,
                    prune_ratio=p.prune_ratio,
                    exit_code=o.exit_code,
                    error=o.error or "failed",
                )
            )
    return out


class SweepFailed(EdgecError):
    """Some compiles of a sweep failed: exits with the first failure's code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every compile succeeded, else the exit code of the first that failed."""
    return next((o.exit_code for o in outcomes if o.exit_code != 0), 0)
