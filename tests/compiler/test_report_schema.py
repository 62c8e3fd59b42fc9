"""report.json's key set is pinned: a refactor of the stages must not move a field.

`report_schema.json` was written from reports of the code before the stages
refactor (digits_cnn: int8, auto with budgets, channel pruning). Every section
and every list-of-records element must carry exactly those keys; data-keyed
dicts (per-layer sensitivity, Q/DQ counts per op) are not pinned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compiler.cli import main

SCHEMA = json.loads((Path(__file__).parent / "report_schema.json").read_text())


def key_shape(report: dict[str, Any]) -> dict[str, list[str]]:
    """{"": top-level keys, "section": its keys, "section[]" / "section.field[]": record keys}."""
    shape = {"": sorted(report)}
    for key, value in report.items():
        if isinstance(value, dict):
            shape[key] = sorted(value)
            for sub, item in value.items():
                if sub == "options" and isinstance(item, dict):
                    shape[f"{key}.{sub}"] = sorted(item)
                if isinstance(item, list) and item and isinstance(item[0], dict):
                    shape[f"{key}.{sub}[]"] = sorted(item[0])
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            shape[f"{key}[]"] = sorted(value[0])
    return shape


@pytest.mark.parametrize(
    "flags",
    [
        ("--precision", "auto", "--max-size-mb", "10", "--min-accuracy", "0.5"),
        ("--prune", "0.3", "--prune-mode", "channel"),
    ],
    ids=["auto-int8-gates", "channel-prune"],
)
def test_report_keys_match_the_pinned_schema(flags: tuple[str, ...], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "compile",
        "digits_cnn",
        *flags,
        "--out",
        str(out),
        "--report",
        "json",
        "--threads",
        "2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    shape = key_shape(json.loads((out / "report.json").read_text()))
    assert shape[""] == SCHEMA[""]
    for section, keys in shape.items():
        assert keys == SCHEMA[section], section
