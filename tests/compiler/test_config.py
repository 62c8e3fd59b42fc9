from __future__ import annotations

from pathlib import Path

import pytest

from compiler.config import load_config_file, merge, parse_shape
from compiler.ground.errors import UsageError


def test_parse_shape_forms() -> None:
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_shape("1x3x8x8") == (1, 3, 8, 8)
    for bad in ("", "a,b", "1,-3", "0,3"):
        with pytest.raises(UsageError):
            parse_shape(bad)


def test_flags_override_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edgec.toml"
    cfg.write_text('target = "cpu"\nthreads = 4\nmax-size-mb = 10.0\nreports = "json"\n')
    config = merge(load_config_file(cfg), {"model": "digits_cnn", "threads": 2, "target": None})
    assert config.threads == 2 and config.target == "cpu"
    assert config.budgets.max_size_mb == 10.0 and config.reports == ("json",)


def test_unknown_config_key_and_bad_values(tmp_path: Path) -> None:
    cfg = tmp_path / "edgec.toml"
    cfg.write_text("colour = 3\n")
    with pytest.raises(UsageError, match="unknown key"):
        load_config_file(cfg)
    with pytest.raises(UsageError, match="precision"):
        merge({}, {"model": "m", "precision": "int3"})
    with pytest.raises(UsageError, match="report format"):
        merge({}, {"model": "m", "reports": "json,pdf"})


FLAGS = {"out": "out_dir", "calib": "calib_source", "report": "reports", "max-size-mb": "max_size_mb",
         "config": "config_file", "json": "as_json", "threads": "threads"}  # fmt: skip


def test_keys_are_the_flag_names(tmp_path: Path) -> None:
    cfg = tmp_path / "edgec.toml"
    cfg.write_text('out = "build/x"\ncalib = "calib.npz"\nreport = "json,md"\nmax_size_mb = 5\n')
    config = merge(load_config_file(cfg, flags=FLAGS), {"model": "digits_cnn"})
    assert config.out_dir == Path("build/x") and config.calib_source == "calib.npz"
    assert config.reports == ("json", "md") and config.budgets.max_size_mb == 5


def test_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "edgec.toml"
    cfg.write_text("json = true\n")  # --json prints; it is not a setting of the run
    with pytest.raises(UsageError, match=r"unknown key 'json'; valid keys: .*calib.*out.*report"):
        load_config_file(cfg, flags=FLAGS)


def test_model_sections_override_the_top_level(tmp_path: Path) -> None:
    cfg = tmp_path / "edgec.toml"
    cfg.write_text(
        "threads = 2\nmax-size-mb = 10\n"
        "[models.mobilenet_v2]\nmax-size-mb = 4\n[models.mine]\nthreads = 1\n"
    )
    mobilenet = load_config_file(cfg, flags=FLAGS, model="mobilenet_v2")
    assert mobilenet == {"threads": 2, "max_size_mb": 4}
    mine = load_config_file(cfg, flags=FLAGS, model="models/mine.onnx")  # by file stem
    assert mine == {"threads": 1, "max_size_mb": 10}


def test_pyproject_tool_edgec_is_discovered(tmp_path: Path) -> None:
    from compiler.config import discover_config

    assert discover_config(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert discover_config(tmp_path) is None  # no [tool.edgec]: not ours
    (tmp_path / "pyproject.toml").write_text("[tool.edgec]\nmax-latency-ms = 20\n")
    found = discover_config(tmp_path)
    assert found is not None and load_config_file(found, flags={}) == {"max_latency_ms": 20}
    (tmp_path / "edgec.toml").write_text("threads = 1\n")
    assert discover_config(tmp_path) == tmp_path / "edgec.toml"  # edgec.toml wins


def test_compile_reads_edgec_toml_from_the_current_directory(
    small_cnn_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from compiler.cli import main

    monkeypatch.chdir(tmp_path)
    stem = small_cnn_onnx.stem
    (tmp_path / "edgec.toml").write_text(
        f'threads = 1\nreport = "json"\nout = "runs/x"\n[models.{stem}]\nmax-size-mb = 0.000001\n'
    )
    result = CliRunner().invoke(main, ["compile", str(small_cnn_onnx)])
    assert result.exit_code == 3, result.output  # the model's own budget, from the file
    assert (tmp_path / "runs" / "x" / "report.json").exists()
    result = CliRunner().invoke(main, ["compile", str(small_cnn_onnx), "--max-size-mb", "100"])
    assert result.exit_code == 0, result.output  # a flag overrides the file
