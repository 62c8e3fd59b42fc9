"""Each run replaces the previous run's files in --out (#17 part 4): the files edgec
published last time (listed in `.edgec-run.json`) go unless written again; files it
did not write, or that changed since, stay; a failed run removes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from compiler.cli import main
from compiler.stages.outputs import MANIFEST, make_staging, publish


def _stage(out: Path, files: dict[str, bytes]) -> Path:
    staging = make_staging(out)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    return staging


def test_publish_removes_only_the_last_runs_unchanged_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _stage(out, {"model.int8.onnx": b"q", "report.md": b"old", "report.json": b"{}"})
    assert publish(first, out) == []
    (out / "mine.txt").write_text("the user's")  # never written by edgec
    (out / "report.md").write_text("edited by the user")  # changed since edgec wrote it
    second = _stage(out, {"model.onnx": b"f", "report.json": b"{1}"})
    removed = publish(second, out)
    assert removed == ["model.int8.onnx"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MANIFEST, "mine.txt", "model.onnx", "report.json", "report.md"])
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["model.onnx", "report.json"]


def test_a_manifest_never_reaches_outside_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    st = victim.stat()
    seen = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entries = {"../victim.txt": seen, str(victim): seen, "..": seen}
    (out / MANIFEST).write_text(json.dumps({"files": entries}))
    publish(_stage(out, {"report.json": b"{}"}), out)
    assert victim.exists()


def test_an_fp32_run_after_an_int8_run_leaves_no_int8_files(
    small_cnn_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    base = ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1"]
    first = CliRunner().invoke(main, [*base, "--precision", "int8", "--calib", "random"])
    assert first.exit_code == 0, first.output
    int8_files = {p.name for p in out.iterdir()}
    assert any("int8" in n for n in int8_files), int8_files
    (out / "notes.txt").write_text("mine")
    second = CliRunner().invoke(main, [*base, "--report", "json"])
    assert second.exit_code == 0, second.output
    names = {p.name for p in out.iterdir()}
    assert not any("int8" in n for n in names), names
    assert "report.md" not in names and "notes.txt" in names  # md not asked for this time
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "fp32"
    published = set(json.loads((out / MANIFEST).read_text())["files"])
    assert published == names - {MANIFEST, "notes.txt"}


def test_a_failed_run_removes_nothing(small_cnn_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["compile", str(small_cnn_onnx), "--out", str(out), "--threads", "1"]
    assert CliRunner().invoke(main, base).exit_code == 0
    before = {p.name: os.stat(p).st_mtime_ns for p in out.iterdir()}
    failed = CliRunner().invoke(main, [*base, "--input-shape", "1,3,16"])
    assert failed.exit_code == 4, failed.output
    assert {p.name: os.stat(p).st_mtime_ns for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
