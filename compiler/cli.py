"""The edgec command line: flags → CompileConfig → compile_model(). No logic lives here.

The CLI owns the terminal: rich tables and progress bars, one-line errors, and
the exit codes of the design contract (0 ok, 2 usage, 3 gate failed, 4 invalid
model/data, 5 target unavailable, 1 a bug).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compiler import __version__, interrupt
from compiler.cli_runs import COMMANDS as RUN_COMMANDS
from compiler.config import (
    Budgets,
    load_config_file,
    merge,
    parse_dim,
    parse_shape,
    split_input_shapes,
)
from compiler.ground.errors import EdgecError, GateFailed, UsageError

out = Console()
err = Console(stderr=True)


def _fail(code: int, message: str) -> None:
    message = " ".join(str(message).split())  # one line, even for a bug's multi-line message
    err.print(f"edgec: error: {message}", markup=False, highlight=False, soft_wrap=True)
    if code == 130 and interrupt.interrupted():
        interrupt.exit_now(code)
    sys.exit(code)


def _interrupted() -> None:
    interrupt.settle()
    _fail(130, "interrupted; no partial output was left behind")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map library errors to one line + exit code; bugs get exit 1 (traceback with EDGEC_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with interrupt.guard():
                result = fn(*args, **kwargs)
                interrupt.check()  # a SIGINT that library code swallowed still counts
            return result
        except KeyboardInterrupt:
            _interrupted()
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:
            if interrupt.interrupted():
                # raised while a Ctrl-C unwound (an import it cut short, imported again,
                # fails with ImportError): the interrupt is what happened
                _interrupted()
            if isinstance(e, EdgecError):
                _fail(e.exit_code, str(e))
            # a bug: say so, keep it to one line unless asked
            if os.environ.get("EDGEC_DEBUG"):
                traceback.print_exc()
            _fail(
                1,
                f"internal error ({type(e).__name__}: {e}); rerun with EDGEC_DEBUG=1 and report it",
            )

    return wrapper


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A Progress callback drawing one bar per stage on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            # "stage|detail" keeps one bar per stage and shows the detail (e.g. QAT loss)
            key, _, detail = stage.partition("|")
            if key not in tasks:
                tasks[key] = bars.add_task(key, total=total)
            label = f"{key} {detail}" if detail else key
            bars.update(tasks[key], completed=done, total=total, description=label)

        yield update


class _WarningLines(logging.Handler):
    """The library's run warnings (`compiler.sanity.warnings_log`) as `edgec: warning:` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        err.print(f"edgec: warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _log_level(verbose: int) -> int:
    return logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG


def _more_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """-v after the subcommand (`edgec compile X -v`) works as it does before it."""
    if value:
        root = logging.getLogger()
        root.setLevel(min(root.level or logging.WARNING, _log_level(value)))


class _Group(click.Group):
    """Gives every subcommand the group's -v/--verbose too."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any("--verbose" in p.opts for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    count=True,
                    expose_value=False,
                    callback=_more_verbose,
                    help="More logging (-vv for debug).",
                )
            )
        super().add_command(cmd, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgec")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def main(verbose: int) -> None:
    """edgec: compile ONNX/PyTorch models into measured edge artifacts."""
    logging.basicConfig(level=_log_level(verbose), format="%(levelname)s %(name)s: %(message)s")
    if verbose:  # basicConfig leaves an already configured root logger as it is
        logging.getLogger().setLevel(_log_level(verbose))
    warnings_log = logging.getLogger("compiler.warnings")
    warnings_log.propagate = False
    if not any(isinstance(h, _WarningLines) for h in warnings_log.handlers):
        warnings_log.addHandler(_WarningLines())


#: the budget flags, in the order `--help` lists them
BUDGET_FLAGS: tuple[tuple[str, str], ...] = (
    ("--max-size-mb", "Fail (exit 3) above this artifact size (10^6 B)."),
    ("--max-compressed-size-mb", "Fail (exit 3) above this gzip-compressed artifact size."),
    ("--max-latency-ms", "Fail (exit 3) above this p50 latency."),
    ("--max-p99-latency-ms", "Fail (exit 3) above this p99 latency."),
    ("--min-speedup", "Fail (exit 3) below this speedup over the FP32 baseline (paired)."),
    ("--min-accuracy", "Fail (exit 3) below this accuracy (0..1)."),
    ("--min-sqnr-db", "Fail (exit 3) below this SQNR against FP32 (dB) of the judged output."),
    ("--max-accuracy-drop", "Fail (exit 3) when accuracy drops more than this below FP32."),
    ("--max-memory-mb", "Fail (exit 3) above this peak memory of a process running the artifact."),
)


def _budget_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for flag, text in reversed(BUDGET_FLAGS):
        fn = click.option(flag, type=float, default=None, help=text)(fn)
    return fn


def _settings(config_file: Path | None, model: str) -> dict[str, Any]:
    """--config FILE, else edgec.toml / pyproject.toml's [tool.edgec] in the current
    directory; keys are the compile command's long flag names."""
    from compiler.config import discover_config

    path = config_file or discover_config(Path.cwd())
    if path is None:
        return {}
    if config_file is None:
        logging.getLogger(__name__).info("settings from %s", path)
    command = click.get_current_context().command
    flags = {o[2:]: p.name for p in command.params for o in p.opts if o.startswith("--") and p.name}
    return load_config_file(path, flags=flags, model=model)


@main.command("compile")
@click.argument("model")
@click.option("--target", "target", default=None, help="cpu (default), cuda or tensorrt.")
@click.option("--precision", default=None, help="fp32 (default), fp16, int8 or auto.")
@click.option(
    "--input-shape",
    multiple=True,
    help="Input shape, e.g. 1,3,224,224 (module:factory needs it); NAME:DIMS for one input of "
    "several (repeatable), e.g. input_ids:1,128.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory [build/MODEL].",
)
@click.option(
    "--format",
    "artifact_format",
    type=click.Choice(["onnx", "ort", "engine"]),
    default=None,
    help="Artifact format [the target's own: onnx; engine for tensorrt].",
)
@click.option(
    "--threads", type=int, default=None, help="Intra-op threads for measurement [all cores]."
)
@click.option("--batch", type=int, default=None, help="Batch size for latency [1].")
@click.option(
    "--eval", "eval_source", default=None, help="Evaluation data: zoo, random, or a .npy/.npz path."
)
@click.option("--eval-samples", type=int, default=None, help="How many evaluation samples.")
@click.option(
    "--output",
    "output",
    default=None,
    help="The output gates and the summary judge (default: the first); every output is "
    "compared in the report.",
)
@click.option(
    "--calib",
    "calib_source",
    default=None,
    help="Calibration data (int8, fp16): zoo, a folder of images, .npy/.npz, a .txt of "
    "sentences (text models), or random (seeded, unrepresentative).",
)
@click.option("--calib-method", default=None, help="minmax, percentile, entropy or mse.")
@click.option("--calib-samples", type=int, default=None, help="How many calibration samples.")
@click.option(
    "--quant-mode",
    type=click.Choice(["static", "dynamic"]),
    default=None,
    help="int8: static (calibrated activations) or dynamic (activations quantized per "
    "call; cpu target) [static].",
)
@click.option(
    "--dim",
    "dims",
    multiple=True,
    help="Size of a named dynamic dimension for data and timing, e.g. --dim seq=128 (repeatable);"
    " the artifact keeps it dynamic.",
)
@click.option(
    "--keep-io-types",
    is_flag=True,
    default=None,
    help="fp16: keep the model's float32 inputs and outputs (casts inside the graph).",
)
@click.option(
    "--qat", is_flag=True, default=None, help="Quantization-aware training (torch sources)."
)
@click.option("--epochs", type=int, default=None, help="QAT epochs [2].")
@click.option("--lr", type=float, default=None, help="QAT learning rate.")
@click.option("--resume", is_flag=True, default=None, help="Resume QAT from its last checkpoint.")
@click.option(
    "--auto-fallback",
    is_flag=True,
    default=None,
    help="int8: keep the most sensitive layers in float until --min-accuracy holds.",
)
@click.option(
    "--fallback-speedup-kept",
    type=float,
    default=None,
    help="--auto-fallback: keep at least this fraction of the time all-INT8 saves over FP32"
    " [0.8]; 0: no latency bound.",
)
@click.option(
    "--int8-overflow",
    type=click.Choice(["7bit", "uint8", "off"]),
    default=None,
    help="int8, cpu: layers whose u8s8 kernel overflows on this CPU (AVX2 without VNNI,"
    " measured) get 7-bit weights (same speed), uint8 weights (same values, slower), or"
    " nothing [7bit].",
)
@click.option(
    "--sensitivity", is_flag=True, default=None, help="int8: per-layer sensitivity in the report."
)
@click.option(
    "--prune", "prune_ratio", type=float, default=None, help="Prune this fraction (0..1)."
)
@click.option(
    "--prune-mode",
    type=click.Choice(["unstructured", "channel", "2:4"]),
    default=None,
    help="unstructured (default), channel, or 2:4 (TensorRT sparse tensor cores).",
)
@click.option(
    "--finetune-epochs", type=int, default=None, help="Recovery fine-tuning after channel pruning."
)
@click.option(
    "--verify/--no-verify", default=None, help="Check each pass numerically with onnxruntime."
)
@click.option(
    "--report",
    "reports",
    default=None,
    help="Report formats: json,md,html (json is always written).",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path),
    default=None,
    help="Write gate results as JUnit XML.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML/JSON config.",
)
@click.option(
    "--no-torch-baseline",
    is_flag=True,
    default=False,
    help="Skip the torch eager latency baseline.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print report.json to stdout instead of a table."
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    default=None,
    help="No progress bars (they are off anyway when stderr is not a terminal).",
)
@click.option(
    "--device",
    default=None,
    help="Board profile (edgec devices): its target, precision, threads and budgets are "
    "defaults under the config file and flags.",
)
@click.option(
    "--package",
    "package",
    is_flag=True,
    default=False,
    help="After a passing compile, write the --device bundle (as edgec package does).",
)
@_budget_options
@handle_errors
def compile_cmd(
    model: str,
    config_file: Path | None,
    as_json: bool,
    no_torch_baseline: bool,
    package: bool,
    **flags: Any,
) -> None:
    """Compile MODEL (zoo name, .onnx path, or module:factory) and measure it."""
    from compiler.devices import check_fits, under_device
    from compiler.pipeline import compile_model

    base, device = under_device(_settings(config_file, model), flags)
    if package and device is None:
        raise UsageError("--package writes a bundle for a board: give --device PROFILE")
    shape, named = split_input_shapes(flags.get("input_shape") or ())
    flags["input_shape"], flags["input_shapes"] = shape, named or None
    flags["dims"] = tuple(parse_dim(d) for d in flags.get("dims") or ()) or None
    if no_torch_baseline:
        flags["torch_baseline"] = False
    config = merge(base, {"model": model, **flags})
    if device is not None:
        check_fits(device.profile, config.target, config.precision)
        for note in device.unjudged:
            err.print(f"edgec: note: {note}", markup=False, highlight=False, soft_wrap=True)
    with progress_bars(not (as_json or config.quiet) and err.is_terminal) as progress:
        result = compile_model(config, progress, command=_command_line(model))
    if as_json:
        out.print_json(json.dumps(result.report))
    else:
        _print_summary(result.report, result.out_dir, html="html" in config.reports)
    failed = [g for g in result.gates if not g.passed]
    if failed:
        for g in failed:
            err.print(g.verdict(), markup=False, highlight=False)
        raise GateFailed(f"{len(failed)} of {len(result.gates)} budgets failed")
    if package and device is not None:
        from compiler.package import package_run

        bundle = package_run(result.out_dir, device.profile.name, target=config.target)
        err.print(f"bundle: {bundle.path}", markup=False, highlight=False, soft_wrap=True)


def _print_summary(report: dict[str, Any], out_dir: Path, *, html: bool = False) -> None:
    from compiler.report import summary_rows

    table = Table(title=f"edgec · {(report.get('model') or {}).get('name')}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in summary_rows(report):
        table.add_row(k, v)
    out.print(table)
    out.print(f"report: {out_dir / 'report.json'}", highlight=False)
    if html:
        out.print(f"report: {out_dir / 'report.html'}", highlight=False)


def _command_line(model: str) -> str | None:
    """This process's command line (shlex-quoted) for report.html, `edgec` for the console
    script's full path; None where this compile did not come from it (called in-process)."""
    argv = list(sys.argv)
    if "compile" not in argv[1:] or model not in argv[1:]:
        return None
    if Path(argv[0]).name == "edgec":
        argv[0] = "edgec"
    return shlex.join(argv)


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def models_cmd(as_json: bool) -> None:
    """List the model zoo: name, task, params, inputs, weights source."""
    from rich import box
    from rich.text import Text

    from models.catalog import catalog  # plain data: no torch import, no model built

    entries = catalog()
    if as_json:
        rows = [
            {
                "name": e.name,
                "task": e.task,
                "params": e.params,
                "inputs": [f"{n} {list(shape)}" for n, shape in e.inputs],
                "weights": e.weights,
            }
            for e in entries
        ]
        out.print_json(json.dumps(rows))
        return
    # laid out for 80 columns: one short line per model, the long weights sources
    # below, grouped (five digits models share one), wrapped at word boundaries
    table = Table(title="edgec model zoo", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("name", "task", "params", "input"):
        table.add_column(col, no_wrap=True, justify="right" if col == "params" else "left")
    for e in entries:
        single = len(e.inputs) == 1
        shapes = [("" if single else f"{n} ") + "x".join(map(str, s)) for n, s in e.inputs]
        table.add_row(e.name, e.task, _count(e.params), "\n".join(shapes))
    out.print(table)
    by_source: dict[str, list[str]] = {}
    for e in entries:
        by_source.setdefault(e.weights, []).append(e.name)
    weights = Table(box=box.SIMPLE_HEAD, title_justify="left")
    weights.add_column("name", no_wrap=True)
    weights.add_column("weights")
    for source, names in by_source.items():
        weights.add_row("\n".join(names), Text(source))
    out.print(weights)


def _count(n: int) -> str:
    """27553 → 27.6k, 3504872 → 3.5M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@main.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def devices_cmd(as_json: bool) -> None:
    """List the board profiles: target, precision, threads, budgets, and why a target is missing."""
    from compiler.devices import device_rows

    rows = device_rows()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="edgec device profiles (--device)")
    for col in ("name", "targets", "precision", "threads", "size MB", "memory MB"):
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        budgets = r["budgets"]
        table.add_row(
            r["name"],
            ", ".join(r["targets"]),
            r["precision"],
            str(r["threads"] or "all"),
            f"{budgets['max_size_mb']:g}" if "max_size_mb" in budgets else "-",
            f"{budgets['max_memory_mb']:g}" if "max_memory_mb" in budgets else "-",
        )
    out.print(table)
    for r in rows:
        for note in r["notes"]:
            # markup=False: a hint's extras (pip install '.[tensorrt]') are not rich tags
            out.print(f"{r['name']}: {note}", markup=False, highlight=False, soft_wrap=True)
    out.print(
        "The first target is the default. Memory MB is not judged yet: reports carry no "
        "measured peak memory.",
        highlight=False,
    )


@main.command("package")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--device", required=True, help="Board profile (edgec devices).")
@click.option("--target", default=None, help="One of the board's targets [the profile's default].")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle folder [RUN_DIR/bundle-DEVICE].",
)
@handle_errors
def package_cmd(run_dir: Path, device: str, target: str | None, out_dir: Path | None) -> None:
    """Bundle a compile's artifact (RUN_DIR: its --out) for a board: model files, manifest.json
    with sha256 of every file, run.py; for TensorRT boards a build script and trtexec line."""
    from compiler.package import package_run

    bundle = package_run(run_dir, device, out=out_dir, target=target)
    files = bundle.manifest["files"]
    table = Table(title=f"bundle for {device} · {bundle.manifest['target']}", show_header=False)
    for name, entry in files.items():
        table.add_row(name, f"{entry['size_bytes']:,} B", entry["role"])
    out.print(table)
    if bundle.manifest.get("tensorrt"):
        out.print(bundle.manifest["tensorrt"]["build_on_board"], highlight=False)
    out.print(f"bundle: {bundle.path}", highlight=False, soft_wrap=True)


@main.command("inspect")
@click.argument("model")
@click.option("--input-shape", default=None, help="Input shape for module:factory sources.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def inspect_cmd(model: str, input_shape: str | None, as_json: bool) -> None:
    """Ops, parameters, size, opset, inputs/outputs and target compatibility of MODEL."""
    from compiler.inspect_model import inspect_source
    from compiler.sources import resolve

    info = inspect_source(
        resolve(model, input_shape=parse_shape(input_shape) if input_shape else None)
    )
    if as_json:
        out.print_json(json.dumps(info))
        return
    from rich.text import Text

    table = Table(title=Text(f"{info['name']} ({info['source']})"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("size", f"{info['size_bytes'] / 1e6:.3f} MB"),
        ("params", f"{info['params']:,}"),
        ("opset", ", ".join(f"{k} {v}" for k, v in info["opset"].items())),
        ("nodes", str(info["nodes"])),
        *(
            (kind, "\n".join(f"{i['name']}: {i['dtype']} {i['shape']}" for i in info[kind]))
            for kind in ("inputs", "outputs")
        ),
        ("ops", "\n".join(f"{op} × {n}" for op, n in info["ops"].items())),
        ("targets", "\n".join(f"{t}: {s}" for t, s in info["targets"].items())),
    ]
    for key, value in rows:
        # Text: shapes ([batch, 3]) and install hints ('.[tensorrt]') are not rich markup
        table.add_row(key, Text(value))
    out.print(table)


@main.command("bench")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--target", default="cpu", help="cpu (default), cuda or tensorrt.")
@click.option("--threads", type=int, default=None, help="Intra-op threads [all cores].")
@click.option("--batch", type=int, default=1, help="Batch size.")
@click.option(
    "--input-shape",
    multiple=True,
    help="Input shape when the model has dynamic dims; NAME:DIMS for one input of several "
    "(repeat it), e.g. --input-shape input_ids:1,128 --input-shape attention_mask:1,128.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def bench_cmd(
    artifacts: tuple[str, ...],
    target: str,
    threads: int | None,
    batch: int,
    input_shape: tuple[str, ...],
    as_json: bool,
) -> None:
    """Latency of artifacts (or models, as exported, unoptimized) on a target, without
    compiling; several are timed in paired alternating blocks, each with its ratio to the first."""
    from compiler.bench_many import bench
    from compiler.pipeline import _resolve_target, default_threads

    if batch < 1:
        raise UsageError("--batch must be at least 1")
    tgt = _resolve_target(target)
    shape, named = split_input_shapes(input_shape)
    results = bench(
        list(artifacts),
        tgt,
        threads=threads or default_threads(),
        batch=batch,
        shape=shape,
        named_shapes=dict(named),
    )
    if len(results) == 1:
        d = results[0].stats.to_dict()
        if as_json:
            out.print_json(
                json.dumps({"model": results[0].model, "target": tgt.name, "latency_ms": d})
            )
            return
        table = Table(title=f"{results[0].model} on {tgt.name}", show_header=False)
        for k, v in d.items():
            table.add_row(k, str(v))
        out.print(table)
        return
    if as_json:
        runs = [
            {
                "name": r.label,
                "model": r.model,
                "latency_ms": r.stats.to_dict(),
                "ratio_to_first": round(r.ratio_to_first, 4),
            }
            for r in results
        ]
        out.print_json(json.dumps({"target": tgt.name, "paired": True, "runs": runs}))
        return
    table = Table(title=f"paired on {tgt.name} (alternating blocks)")
    for col in ("artifact", "p50 ms", "p99 ms", "runs", "latency / first"):
        table.add_column(col)
    for r in results:
        d = r.stats.to_dict()
        table.add_row(
            r.label, str(d["p50"]), str(d["p99"]), str(d["iterations"]), f"×{r.ratio_to_first:.3g}"
        )
    out.print(table)


@main.command("gate")
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@_budget_options
@click.option(
    "--junit",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the verdicts as JUnit XML (one test suite per report).",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set).",
)
@handle_errors
def gate_cmd(
    reports: tuple[Path, ...],
    junit: Path | None,
    markdown_path: Path | None,
    **limits: float | None,
) -> None:
    """Judge existing report.json files against budgets (exit 3 when one fails); without
    budget flags, by the gates each report was compiled with."""
    from compiler import gate_report
    from compiler.ground.io import atomic_write_text

    budgets = Budgets(**limits)
    judged = gate_report.judge_reports(list(reports), budgets)
    table = Table(title="edgec gate")
    for column in ("model", "gate", "value", "budget", "verdict"):
        table.add_column(column)
    for row in gate_report.table_rows(judged):
        style = "green" if row[-1] == "passed" else "bold red"
        table.add_row(*row[:-1], f"[{style}]{row[-1]}[/{style}]")
    out.print(table)
    summary = gate_report.markdown(judged)
    gate_report.append_step_summary(summary)
    if markdown_path is not None:
        atomic_write_text(markdown_path, summary)
    if junit is not None:
        atomic_write_text(junit, gate_report.junit(judged))
    if os.environ.get("GITHUB_ACTIONS"):
        for line in gate_report.error_annotations(judged):
            click.echo(line)
    failed = [f"{j.model}: {r.name}" for j in judged for r in j.results if not r.passed]
    total = sum(len(j.results) for j in judged)
    if failed:
        raise GateFailed(f"{len(failed)} of {total} budgets failed ({', '.join(failed)})")


# edgec compare / sweep (compiler/cli_runs.py), under this module's error handling
for _command in RUN_COMMANDS:
    if _command.callback is not None:
        _command.callback = handle_errors(_command.callback)
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
