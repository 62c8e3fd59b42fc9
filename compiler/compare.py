"""Several runs side by side: one row per run, and the accuracy-latency Pareto front.

A run is an `edgec compile --out DIR` folder (its report.json), or a sweep's
failed compile (no report: its exit code and one-line error). Latency is a
property of the machine that measured it, so rows are grouped by machine
(the report's `environment`: hostname and CPU model) and the Pareto front —
no other run of the same machine and accuracy metric is at least as accurate
and at least as fast, and strictly better in one — is computed per group.
Figures from different machines are never compared; `Comparison.notes` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from compiler.gates import accuracy_metric
from compiler.ground.errors import UsageError
from compiler.ground.io import read_report
from compiler.machine import machine_key

#: the machine label of a report without an `environment` section
UNKNOWN_MACHINE = "unknown machine"


@dataclass(frozen=True)
class Row:
    """One run's figures; `exit_code`/`error` are set for a compile that failed."""

    run: str
    model: str | None
    precision: str | None
    target: str | None
    prune_ratio: float
    size_mb: float | None
    p50_ms: float | None
    #: artifact p50 / FP32 baseline p50, paired in the same run (< 1: faster)
    latency_ratio: float | None
    metric: str | None
    accuracy: float | None
    machine: str
    path: str | None = None
    exit_code: int = 0
    error: str | None = None
    pareto: bool = False

    @property
    def failed(self) -> bool:
        return self.exit_code != 0


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    machines: list[str]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [asdict(r) for r in self.rows],
            "machines": self.machines,
            "notes": self.notes,
        }


def load_report(path: Path) -> dict[str, Any]:
    """report.json of a run folder (or the file itself); UsageError (exit 2) when it is
    missing or not a report."""
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path}: no report.json; give the --out folder of an edgec compile")
    return read_report(file, needs="model", error=UsageError)


def run_name(path: Path) -> str:
    """A run's name: its folder's name."""
    return (path.parent if path.name == "report.json" else path).resolve().name


def row_of(name: str, report: dict[str, Any], path: str | None = None) -> Row:
    """The figures of one report, as compare shows them."""
    artifact = report.get("artifact") or {}
    latency = report.get("latency_ms") or {}
    baseline = report.get("baseline") or {}
    pruning = report.get("pruning") or {}
    metric, value = accuracy_metric(report.get("accuracy"))
    size = artifact.get("size_bytes")
    gates = report.get("gates") or []
    failed_gates = [g for g in gates if not g.get("passed")]
    return Row(
        run=name,
        model=(report.get("model") or {}).get("name"),
        precision=report.get("precision"),
        target=report.get("target"),
        prune_ratio=float(pruning.get("ratio") or 0.0),
        size_mb=None if size is None else size / 1e6,
        p50_ms=latency.get("p50"),
        latency_ratio=baseline.get("latency_ratio"),
        metric=metric if value is not None else None,
        accuracy=value,
        machine=machine_key(report.get("environment")) or UNKNOWN_MACHINE,
        path=path,
        exit_code=3 if failed_gates else 0,
        error=f"{len(failed_gates)} of {len(gates)} budgets failed" if failed_gates else None,
    )


def failed_row(
    name: str,
    *,
    model: str,
    precision: str,
    target: str,
    prune_ratio: float,
    exit_code: int,
    error: str,
) -> Row:
    """A compile that wrote no report: what was asked, and why it failed."""
    return Row(
        run=name,
        model=model,
        precision=precision,
        target=target,
        prune_ratio=prune_ratio,
        size_mb=None,
        p50_ms=None,
        latency_ratio=None,
        metric=None,
        accuracy=None,
        machine=UNKNOWN_MACHINE,
        exit_code=exit_code,
        error=error,
    )


def expand(paths: Sequence[Path]) -> list[Path]:
    """Run folders as given; a folder without report.json whose subfolders have one (an
    `edgec sweep --out` folder) stands for those subfolders, in name order."""
    out: list[Path] = []
    for p in paths:
        runs = (
            []
            if (p / "report.json").exists() or not p.is_dir()
            else sorted(p.glob("*/report.json"))
        )
        out += [r.parent for r in runs] or [p]
    return out


def load_runs(paths: Sequence[Path]) -> list[Row]:
    """One row per run folder (a sweep folder: each of its runs); the first missing or
    corrupt report stops (exit 2)."""
    return [row_of(run_name(p), load_report(p), str(p)) for p in expand(paths)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (accuracy, latency) points: True where no other point has accuracy >= and
    latency <= with one of them strictly better. Equal points are all on the front."""
    flags = []
    for i, (acc, lat) in enumerate(points):
        dominated = any(
            a >= acc and t <= lat and (a > acc or t < lat)
            for j, (a, t) in enumerate(points)
            if j != i
        )
        flags.append(not dominated)
    return flags


def _group(row: Row) -> tuple[str, str | None]:
    return row.machine, row.metric


def compare(rows: Sequence[Row]) -> Comparison:
    """Mark each group's (machine × accuracy metric) Pareto front; say when machines differ."""
    measured = [r for r in rows if r.p50_ms is not None and r.accuracy is not None]
    on_front: set[int] = set()
    for key in dict.fromkeys(_group(r) for r in measured):
        members = [r for r in measured if _group(r) == key]
        flags = pareto_front([(float(r.accuracy or 0), float(r.p50_ms or 0)) for r in members])
        on_front |= {id(r) for r, f in zip(members, flags, strict=True) if f}
    marked = [replace(r, pareto=id(r) in on_front) for r in rows]
    machines = list(dict.fromkeys(r.machine for r in rows if r.p50_ms is not None))
    notes = []
    if len(machines) > 1:
        notes.append(
            f"these runs were measured on {len(machines)} machines ({'; '.join(machines)}): "
            "latency is not comparable across machines, and the Pareto front is computed "
            "per machine"
        )
    metrics = {r.metric for r in measured}
    if len(metrics) > 1:
        notes.append(
            f"accuracy metrics differ ({', '.join(sorted(m or '?' for m in metrics))}): "
            "the Pareto front is computed per metric"
        )
    failed = [r for r in rows if r.failed]
    if failed:
        notes.append(f"{len(failed)} of {len(rows)} runs failed")
    return Comparison(marked, machines, notes)


def _num(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


COLUMNS = (
    "run",
    "model",
    "precision",
    "target",
    "prune",
    "size MB",
    "p50 ms",
    "p50 / fp32",
    "accuracy",
    "machine",
    "pareto",
    "status",
)


def table_rows(comparison: Comparison) -> list[list[str]]:
    """The cells of the table, in `COLUMNS` order, for the terminal, Markdown and HTML."""
    cells = []
    for r in comparison.rows:
        status = "ok" if not r.failed else f"exit {r.exit_code}: {r.error}"
        cells.append(
            [
                r.run,
                r.model or "—",
                r.precision or "—",
                r.target or "—",
                f"{r.prune_ratio:g}",
                _num(r.size_mb),
                _num(r.p50_ms),
                "—" if r.latency_ratio is None else f"×{r.latency_ratio:.3g}",
                "—" if r.accuracy is None else f"{r.metric} {r.accuracy:.4g}",
                r.machine,
                "★" if r.pareto else "",
                status,
            ]
        )
    return cells


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def to_markdown(comparison: Comparison) -> str:
    lines = [
        "# edgec compare",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table_rows(comparison)]
    lines += [
        "",
        "p50 / fp32: the artifact's median latency over its FP32 baseline's, paired in the "
        "same run (< 1 is faster). ★: on the accuracy-latency Pareto front of its machine.",
    ]
    lines += [f"\n**Note:** {n}" for n in comparison.notes]
    return "\n".join(lines) + "\n"
