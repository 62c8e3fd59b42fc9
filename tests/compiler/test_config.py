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
