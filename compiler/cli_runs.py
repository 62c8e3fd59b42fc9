"""`edgec compare` and `edgec sweep`: the command-line glue over compiler.compare and
compiler.sweep (no logic here). compiler.cli registers these commands and wraps them
in its error handler, so they exit with the design contract's codes."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # imported where used: `edgec models` and --help must not load onnx
    from compiler import compare as cmp
    from compiler import sweep

out = Console()
err = Console(stderr=True)


def print_comparison(comparison: cmp.Comparison, title: str = "edgec compare") -> None:
    """The comparison as a rich table, then its notes (machines, metrics, failures). The
    machine column is left out when one machine measured every run (a line names it), the
    status column when no run failed."""
    from compiler import compare as cmp

    columns = list(cmp.COLUMNS)
    drop = set()
    if len(comparison.machines) <= 1:
        drop.add("machine")
    if not any(r.failed for r in comparison.rows):
        drop.add("status")
    keep = [i for i, c in enumerate(columns) if c not in drop]
    table = Table(title=title)
    for i in keep:
        table.add_column(columns[i], overflow="fold")
    for row, cells in zip(comparison.rows, cmp.table_rows(comparison), strict=True):
        table.add_row(*(cells[i] for i in keep), style="red" if row.failed else None)
    # piped to a file or a CI log: no terminal width to fit, so keep each row on one line
    wide = out if out.is_terminal else Console(width=max(out.width, 180))
    wide.print(table)
    if len(comparison.machines) == 1:
        out.print(f"measured on: {comparison.machines[0]}", highlight=False, soft_wrap=True)
    for note in comparison.notes:
        out.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)


def write_outputs(
    comparison: cmp.Comparison, markdown_path: Path | None, html_path: Path | None
) -> None:
    from compiler import compare as cmp
    from compiler.ground.io import atomic_write_text

    if markdown_path is not None:
        atomic_write_text(markdown_path, cmp.to_markdown(comparison))
    if html_path is not None:
        from compiler.compare_html import to_html

        atomic_write_text(html_path, to_html(comparison))


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the table as Markdown to FILE.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a self-contained HTML page: the table and the accuracy-latency plot.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(
    run_dirs: tuple[Path, ...], markdown_path: Path | None, html_path: Path | None, as_json: bool
) -> None:
    """Compare compile runs (RUN_DIR: an edgec compile --out folder, or its report.json):
    size, p50 latency and its ratio to each run's FP32 baseline, accuracy, the machine that
    measured it, and the accuracy-latency Pareto front (per machine)."""
    from compiler import compare as cmp

    comparison = cmp.compare(cmp.load_runs(list(run_dirs)))
    write_outputs(comparison, markdown_path, html_path)
    if as_json:
        out.print_json(json.dumps(comparison.to_dict()))
    else:
        print_comparison(comparison)


def _compile_flags() -> dict[str, str]:
    """The compile command's long flag names → field names: the keys a sweep file may set."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    command = (
        root.command.get_command(root, "compile") if isinstance(root.command, click.Group) else None
    )
    params = command.params if command is not None else []
    return {o[2:]: p.name for p in params for o in p.opts if o.startswith("--") and p.name}


def _axes_and_settings(
    config_file: Path | None, models: tuple[str, ...], axis_flags: dict[str, str | None]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The sweep file's axes and settings, with the command line's over them."""
    from compiler import sweep

    axes: dict[str, list[Any]] = {}
    settings: dict[str, Any] = {}
    if config_file is not None:
        axes, settings = sweep.read_config(config_file, _compile_flags())
    if models:
        axes["model"] = list(models)
    for axis, value in axis_flags.items():
        if value is not None:
            axes[axis] = sweep.split_list(value)
    return axes, settings


@click.command("sweep")
@click.argument("models", nargs=-1)
@click.option("--precision", default=None, help="Precisions, comma-separated [fp32].")
@click.option("--target", default=None, help="Targets, comma-separated [cpu].")
@click.option("--prune", default=None, help="Pruning ratios, comma-separated; 0: none [0].")
@click.option("--calib-method", default=None, help="Calibration methods (int8 points).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Sweep folder: one run folder per point, compare.html/.md/.json [build/sweep].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML/JSON sweep file: the axes (model(s), precision, target, prune, calib-method) "
    "and any edgec compile setting, by its long flag name.",
)
@click.option("--threads", type=int, default=None, help="Intra-op threads per compile.")
@click.option("--calib-samples", type=int, default=None, help="Calibration samples.")
@click.option("--eval-samples", type=int, default=None, help="Evaluation samples.")
@click.option(
    "--no-torch-baseline", is_flag=True, default=False, help="Skip the torch eager baseline."
)
@click.option("--ray", "use_ray", is_flag=True, help="Each compile as a task on a local Ray.")
@click.option("--ray-address", default=None, help="Each compile as a task on this Ray cluster.")
@click.option("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance (--ray) [2].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def sweep_cmd(
    models: tuple[str, ...],
    out_dir: Path | None,
    config_file: Path | None,
    use_ray: bool,
    ray_address: str | None,
    ray_cpus: int,
    as_json: bool,
    no_torch_baseline: bool,
    **flags: Any,
) -> None:
    """Compile models × precisions × targets × pruning ratios × calibration methods, each
    point into its own run folder under --out, then compare them. A failed
    compile is recorded and the sweep goes on; the exit code is then the first failed
    compile's (3 gate, 4 invalid model/data, 5 target unavailable, 1 bug)."""
    from compiler import compare as cmp
    from compiler import sweep
    from compiler.ground.io import atomic_write_text

    axis_flags = {
        a: flags.pop(a.replace("-", "_")) for a in ("precision", "target", "prune", "calib-method")
    }
    axes, settings = _axes_and_settings(config_file, models, axis_flags)
    settings.update({k: v for k, v in flags.items() if v is not None})
    if no_torch_baseline:
        settings["torch_baseline"] = False
    folder = out_dir or Path(settings.pop("out_dir", None) or "build/sweep")
    settings.pop("out_dir", None)
    jobs = sweep.jobs(axes, settings, folder)

    def done(o: sweep.Outcome) -> None:
        status = "ok" if o.exit_code == 0 else f"exit {o.exit_code}: {o.error}"
        err.print(f"{o.name}: {status}", markup=False, highlight=False, soft_wrap=True)

    if use_ray or ray_address:
        cpus = settings.get("threads") or 1
        run = partial(sweep.run_ray, address=ray_address, num_cpus=ray_cpus, cpus_per_task=cpus)
        outcomes = run(jobs, done)
    else:
        outcomes = sweep.run_local(jobs, done)
    comparison = cmp.compare(sweep.rows(jobs, outcomes))
    folder.mkdir(parents=True, exist_ok=True)
    write_outputs(comparison, folder / "compare.md", folder / "compare.html")
    atomic_write_text(folder / "compare.json", json.dumps(comparison.to_dict(), indent=2) + "\n")
    if as_json:
        out.print_json(json.dumps(comparison.to_dict()))
    else:
        print_comparison(comparison, title=f"edgec sweep · {len(jobs)} runs")
        out.print(f"compare: {folder / 'compare.html'}", highlight=False, soft_wrap=True)
    code = sweep.exit_code(outcomes)
    if code:
        failed = sum(o.exit_code != 0 for o in outcomes)
        raise sweep.SweepFailed(f"{failed} of {len(outcomes)} compiles failed", code)


#: what compiler.cli registers
COMMANDS = (compare_cmd, sweep_cmd)
