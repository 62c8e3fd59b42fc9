"""Output folders: build in a hidden staging folder, publish only when the run succeeds.

The staging folder sits beside `--out` (same filesystem), so publishing is one
atomic rename per file, and a failed or interrupted run leaves no partial
artifact behind.

Each run replaces the previous run's files: publishing records what it wrote in
`--out/.edgec-run.json` (name, size, mtime of each file), and the next run that
publishes there removes the files of that list it does not write again, so an
fp32 run after an int8 one leaves no stale `model.int8.onnx` beside its report.
Only files edgec wrote and nobody changed since (same size and mtime) are
removed; anything else in the folder is never touched. A run that fails
publishes nothing and removes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from compiler.ground.errors import UsageError
from compiler.ground.io import atomic_write_text

#: the list of files the last run published into its --out folder
MANIFEST = ".edgec-run.json"

log = logging.getLogger(__name__)


def make_staging(out_dir: Path) -> Path:
    """A fresh hidden folder beside `out_dir`; UsageError when that place is not writable."""
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} exists and is not a directory")
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.edgec-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}; choose another --out") from None


def publish(staging: Path, out_dir: Path) -> list[str]:
    """Move every staged file into out_dir (same filesystem: each move is atomic), then
    remove the previous run's files this run did not replace (see the module docstring);
    returns the names of the files removed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        previous = _previous_files(out_dir)
        written: dict[str, dict[str, int]] = {}
        for f in sorted(staging.iterdir()):
            if f.is_file():  # private working folders (e.g. the fp32 baseline) stay behind
                final = out_dir / f.name
                os.replace(f, final)
                st = final.stat()
                written[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        removed = [
            name
            for name, seen in previous.items()
            if name not in written and _remove_if_unchanged(out_dir / name, seen)
        ]
        atomic_write_text(out_dir / MANIFEST, json.dumps({"files": written}, indent=1) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}; choose another --out") from None
    if removed:
        log.info("removed the previous run's %s from %s", ", ".join(removed), out_dir)
    return removed


def _previous_files(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The last run's {name: {size, mtime_ns}}; nothing when there is no readable manifest.
    Only plain names count: a manifest never reaches outside its folder."""
    try:
        files = json.loads((out_dir / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {
        name: seen
        for name, seen in files.items()
        if isinstance(name, str)
        and isinstance(seen, dict)
        and name not in ("", ".", "..", MANIFEST)
        and Path(name).name == name
    }


def _remove_if_unchanged(path: Path, seen: dict[str, Any]) -> bool:
    """Unlink `path` when it is a regular file as edgec left it (same size and mtime)."""
    with contextlib.suppress(OSError):
        st = path.lstat()
        if (
            path.is_file()
            and not path.is_symlink()
            and st.st_size == seen.get("size")
            and st.st_mtime_ns == seen.get("mtime_ns")
        ):
            path.unlink()
            return True
    return False
