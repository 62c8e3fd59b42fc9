"""Peak memory of the deployed process: what a board must have free to run the artifact.

A fresh Python process loads the artifact with onnxruntime (the settings of a
run: the thread count, every graph optimization) and runs it a few times on the
run's own inputs; its peak resident set size (Linux: VmHWM, the peak since the
process started its own program; elsewhere `getrusage`) is the figure, the interpreter and onnxruntime included, since a board pays for
them too. Measured in a separate process so the compiler's own memory (torch,
the calibration data) is not counted. Only `.onnx`/`.ort` artifacts: a TensorRT
engine's memory is the GPU's and is not measured here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from compiler.ground.errors import InvalidInput

_CHILD = """
import resource, sys


def peak_kib():
    # VmHWM: this process's own peak since exec; getrusage's ru_maxrss keeps the peak of
    # the process it was forked from (a compile holding torch: 2.3 GB for a tiny model)
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


import numpy as np
import onnxruntime as ort
path, feeds_path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if path == "-":  # the runtime alone: the interpreter, numpy and onnxruntime imported
    print(peak_kib())
    sys.exit(0)
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
with np.load(feeds_path) as data:
    feeds = {k: data[k] for k in data.files}
for _ in range(runs):
    session.run(None, feeds)
print(peak_kib())
"""


def peak_memory_mb(
    artifact: Path | None, feeds: Mapping[str, np.ndarray], *, threads: int, runs: int = 3
) -> float | None:
    """Peak RSS in MB (10^6 bytes) of a process running `artifact` on `feeds` (None: of
    the runtime alone, imported and idle); None for formats onnxruntime does not load."""
    if artifact is not None and Path(artifact).suffix not in (".onnx", ".ort"):
        return None
    with tempfile.TemporaryDirectory(prefix="edgec-memory-") as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        np.savez(feeds_path, **dict(feeds))  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(artifact or "-"), str(feeds_path), str(threads),
             str(runs)],
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidInput(f"measuring peak memory: the artifact did not run ({last[:200]})")
    return round(int(done.stdout.split()[-1]) * 1024 / 1e6, 1)
