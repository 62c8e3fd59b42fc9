"""Output folders: build in a hidden staging folder, publish only when the run succeeds.

The staging folder sits beside `--out` (same filesystem), so publishing is one
atomic rename per file, and a failed or interrupted run leaves no partial
artifact behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from compiler.ground.errors import UsageError


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


def publish(staging: Path, out_dir: Path) -> None:
    """Move every staged file into out_dir (same filesystem: each move is atomic)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(staging.iterdir()):
            if f.is_file():  # private working folders (e.g. the fp32 baseline) stay behind
                os.replace(f, out_dir / f.name)
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}; choose another --out") from None
