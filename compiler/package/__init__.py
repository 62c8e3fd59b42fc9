"""Deployable bundles for a board: `package_run(RUN_DIR, device)` (see `bundle`).

`templates/` holds the files a bundle carries as they are: `run.py` (numpy and
onnxruntime only) and `build_engine.py` (TensorRT's Python API, run on the board).
"""

from __future__ import annotations

from compiler.package.bundle import Bundle, default_out, package_run

__all__ = ["Bundle", "default_out", "package_run"]
