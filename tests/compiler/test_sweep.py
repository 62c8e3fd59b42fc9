"""edgec sweep: the axes product and run names, failures recorded, and digits_cnn
fp32/int8 × two pruning ratios compiled in-process and as tasks on a local Ray instance,
then compared (table, compare.md, compare.html with the Pareto plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compiler import sweep
from compiler.cli import main
from compiler.compare import pareto_front
from compiler.ground.errors import UsageError

#: small settings so that the whole sweep takes seconds (no timing is asserted)
FAST = ("--threads", "1", "--calib-samples", "32", "--eval-samples", "64", "--no-torch-baseline")
RUNS = [
    "digits_cnn-fp32-cpu-prune0",
    "digits_cnn-fp32-cpu-prune0.5",
    "digits_cnn-int8-cpu-prune0",
    "digits_cnn-int8-cpu-prune0.5",
]


def test_points_are_the_product_of_the_axes_named_from_them(tmp_path: Path) -> None:
    axes = {
        "model": ["digits_cnn", "pkg.nets:tiny_net"],
        "precision": ["fp32", "int8"],
        "prune": [0, 0.5],
        "calib-method": ["minmax", "entropy"],
    }
    settings = {"threads": 1, "calib_samples": 16, "quant_mode": "static"}
    jobs = sweep.jobs(axes, settings, tmp_path)
    # the calibration axis multiplies only the int8 points: 2 models × (2 fp32 + 4 int8)
    assert len(jobs) == 12
    names = [j.name for j in jobs]
    assert names[:6] == [
        "digits_cnn-fp32-cpu-prune0",
        "digits_cnn-fp32-cpu-prune0.5",
        "digits_cnn-int8-cpu-prune0-minmax",
        "digits_cnn-int8-cpu-prune0-entropy",
        "digits_cnn-int8-cpu-prune0.5-minmax",
        "digits_cnn-int8-cpu-prune0.5-entropy",
    ]
    assert names[6] == "tiny_net-fp32-cpu-prune0"
    first, pruned = jobs[2].config, jobs[4].config
    assert (first.precision, first.prune_ratio, first.calib_method) == ("int8", None, "minmax")
    assert (pruned.prune_ratio, pruned.threads) == (0.5, 1)
    # int8-only settings go to the int8 points only (an fp32 compile refuses --quant-mode)
    assert (first.calib_samples, first.quant_mode) == (16, "static")
    assert (jobs[0].config.calib_samples, jobs[0].config.quant_mode) == (None, None)
    assert jobs[0].config.threads == 1
    assert first.out_dir == tmp_path / "digits_cnn-int8-cpu-prune0-minmax"


def test_defaults_and_bad_axes(tmp_path: Path) -> None:
    (job,) = sweep.jobs({"model": ["digits_cnn"]}, {}, tmp_path)
    assert job.name == "digits_cnn-fp32-cpu"
    with pytest.raises(UsageError, match="--prune"):
        sweep.jobs({"model": ["m"], "prune": ["1.5"]}, {}, tmp_path)
    with pytest.raises(UsageError, match="precision"):
        sweep.jobs({"model": ["m"], "precision": ["int4"]}, {}, tmp_path)
    with pytest.raises(UsageError, match="MODEL"):
        sweep.jobs({}, {}, tmp_path)


def test_sweep_file_has_the_flags_keys(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        'models = ["digits_cnn"]\nprecision = "fp32,int8"\nprune = [0, 0.5]\n'
        "calib-samples = 16\nmax-size-mb = 5\n"
    )
    axes, settings = sweep.read_config(config, {"calib-samples": "calib_samples"})
    assert axes == {"model": ["digits_cnn"], "precision": ["fp32", "int8"], "prune": [0, 0.5]}
    assert settings == {"calib_samples": 16, "max_size_mb": 5}
    jobs = sweep.jobs(axes, settings, tmp_path)
    assert [j.name for j in jobs] == RUNS
    assert jobs[0].config.budgets.max_size_mb == 5
    config.write_text('models = ["digits_cnn"]\nno-such-flag = 1\n')
    result = CliRunner().invoke(main, ["sweep", "--config", str(config), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no-such-flag" in result.output


def test_a_failed_compile_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    missing = tmp_path / "missing.onnx"
    result = CliRunner().invoke(
        main,
        ["sweep", str(missing), "--precision", "fp32,int8", "--out", str(out), "--json"],
    )
    data = json.loads(result.output[result.output.index("{") : result.output.rindex("}") + 1])
    codes = [r["exit_code"] for r in data["runs"]]
    assert len(codes) == 2 and all(c != 0 for c in codes)
    assert result.exit_code == codes[0]  # the first failure's exit code
    assert all("missing.onnx" in r["error"] for r in data["runs"])
    assert "2 of 2 compiles failed" in result.output
    assert "exit" in (out / "compare.md").read_text()
    assert "2 of 2 runs failed" in (out / "compare.html").read_text()


def test_sweep_exit_code_is_the_first_failures() -> None:
    outcomes = [
        sweep.Outcome("a", {}),
        sweep.Outcome("b", None, 4, "bad model"),
        sweep.Outcome("c", {}, 3, "1 of 1 budgets failed"),
    ]
    assert sweep.exit_code(outcomes) == 4
    assert sweep.exit_code(outcomes[:1]) == 0


def test_ray_missing_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    args = ["sweep", "digits_cnn", "--ray", "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "pip install 'edgec[ray]'" in result.output
    assert not (tmp_path / "s" / "digits_cnn-fp32-cpu").exists()


def _check_sweep(out: Path, output: str) -> None:
    """4 run folders with report.json; compare.json's rows carry each report's figures;
    the table, compare.md and compare.html (with the SVG plot) are written."""
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == RUNS
    rows = {r["run"]: r for r in json.loads((out / "compare.json").read_text())["runs"]}
    assert sorted(rows) == RUNS
    for name in RUNS:
        report: dict[str, Any] = json.loads((out / name / "report.json").read_text())
        row = rows[name]
        assert row["exit_code"] == 0 and row["error"] is None
        assert row["precision"] == report["precision"] == name.split("-")[1]
        assert row["prune_ratio"] == float(name.rsplit("prune", 1)[1])
        assert row["prune_ratio"] == ((report["pruning"] or {}).get("ratio") or 0.0)
        assert row["size_mb"] == report["artifact"]["size_bytes"] / 1e6
        assert row["p50_ms"] == report["latency_ms"]["p50"]
        assert row["latency_ratio"] == report["baseline"]["latency_ratio"]
        assert (row["metric"], row["accuracy"]) == (
            "top1_accuracy",
            report["accuracy"]["top1_accuracy"],
        )
        env = report["environment"]
        assert row["machine"] == f"{env['hostname']} · {env['cpu']}"
    # the front is correct for the figures measured
    points = [(rows[n]["accuracy"], rows[n]["p50_ms"]) for n in RUNS]
    assert [rows[n]["pareto"] for n in RUNS] == pareto_front(points)
    assert any(rows[n]["pareto"] for n in RUNS)
    html = (out / "compare.html").read_text()
    assert "<svg" in html and all(n in html for n in RUNS)
    assert all(n in (out / "compare.md").read_text() for n in RUNS)
    assert all(n in output for n in RUNS)  # the terminal table


def _sweep(out: Path, *extra: str) -> str:
    args = ["sweep", "digits_cnn", "--precision", "fp32,int8", "--prune", "0,0.5"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), *FAST, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_sweep_in_process(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _check_sweep(out, _sweep(out))


def test_sweep_on_a_local_ray_instance(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    _check_sweep(out, _sweep(out, "--ray", "--ray-cpus", "2"))
