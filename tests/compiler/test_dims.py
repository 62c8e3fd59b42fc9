"""`--dim NAME=N`: a model nobody here wrote (a random-init transformers BERT, three int64
inputs, dynamic batch and sequence) compiles with one flag and keeps its dynamic axes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from compiler.cli import main
from tests.passes.precision._models import bert_bytes


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    path.write_bytes(bert_bytes())
    return path


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _dims(path: str | Path, name: str) -> list[str | int]:
    (vi,) = [i for i in onnx.load(str(path)).graph.input if i.name == name]
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_bert_compiles_with_one_dim_flag_and_stays_dynamic(bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, text = _run(
        "compile", str(bert), "--dim", "sequence=16", "--eval-samples", "8", "--out", str(out),
        "--report", "json", "--threads", "2", "--no-torch-baseline",
    )  # fmt: skip
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    # FP32 after cleanup and fusion computes what the input model computes
    assert report["accuracy"]["cosine"] > 0.99999 and report["accuracy"]["max_abs_error"] < 1e-4
    # token ids below the embedding tables' rows, masks 0/1: the report says so
    source = report["accuracy"]["source"]
    assert "input_ids uniform in [0, 30522)" in source
    assert (
        "token_type_ids uniform in [0, 2)" in source
        and "attention_mask uniform in [0, 2)" in source
    )
    artifact = report["artifact"]["path"]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert _dims(artifact, name) == _dims(bert, name) == ["batch", "sequence"]


def test_dim_names_are_checked_against_the_model(bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, text = _run("compile", str(bert), "--out", str(out))
    assert (
        code == 2
        and "input 'input_ids' has a dynamic dimension at axis 1: give --dim sequence=N" in text
    )
    code, text = _run("compile", str(bert), "--dim", "seq=16", "--out", str(out))
    assert (
        code == 2
        and "--dim seq: the model's inputs have no such dimension (batch, sequence)" in text
    )
    code, text = _run("compile", str(bert), "--dim", "sequence=0", "--out", str(out))
    assert code == 2 and "is not NAME=N with a positive N" in text
    assert not out.exists()


def test_verify_checks_passes_on_the_runs_own_token_ids(bert: Path, tmp_path: Path) -> None:
    """--verify used to draw its own integers, past BERT's 2-row token-type table: exit 1.
    Now every pass is checked on held-out samples of the run (ids below their tables)."""
    out = tmp_path / "out"
    code, text = _run(
        "compile", str(bert), "--dim", "sequence=16", "--eval-samples", "4", "--verify",
        "--out", str(out), "--report", "json",
    )  # fmt: skip
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    changed = [p for p in report["passes"] if p["changed"]]
    assert changed and all(p["max_abs_error"] is not None for p in changed)
    assert max(p["max_abs_error"] for p in changed) < 1e-4
