"""Peak memory of INT8 calibration of MobileNetV2 on 1,000 samples (issue 6: < 2 GiB).

The calibration crops are written once to a `.npy` file in chunks; calibration
then streams them from the memory-mapped file in batches, so the measured peak
is the calibrator's own (model, sessions, histograms), not the data set's.
The run happens in a fresh subprocess so `ru_maxrss` is this job's peak alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

SAMPLES = 1000
LIMIT_BYTES = 2 * 1024**3

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import onnx_ir as ir
    from compiler.sources import resolve
    from compiler.stages.optimize import optimize
    from passes.quantize import CPU_SPEC, PtqOptions, quantize

    path, samples = sys.argv[1], int(sys.argv[2])
    model, _ = optimize(ir.from_proto(resolve("mobilenet_v2").proto))
    t = time.perf_counter()
    _, summary = quantize(model, path, PtqOptions(samples=samples), spec=CPU_SPEC)
    print(json.dumps({
        "samples": summary.samples,
        "seconds": round(time.perf_counter() - t, 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    """
)


def _write_crops(path: Path, n: int) -> None:
    """Write n zoo calibration crops to a .npy (in this parent process, not the measured one)."""
    import numpy as np

    from models.registry import get_model

    np.save(path, get_model("mobilenet_v2").calibration_data(n))


def run(out_path: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "calib.npy"
        t = time.perf_counter()
        _write_crops(data, SAMPLES)
        prep = time.perf_counter() - t
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(data), str(SAMPLES)],
            capture_output=True,
            text=True,
            check=True,
        )
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "model": "mobilenet_v2",
        "source": "memory-mapped .npy of zoo calibration crops",
        "data_bytes": SAMPLES * 3 * 224 * 224 * 4,
        "prepare_seconds": round(prep, 1),
        **child,
        "limit_bytes": LIMIT_BYTES,
        "within_limit": child["peak_rss_bytes"] < LIMIT_BYTES,
    }
    print(f"  peak RSS {child['peak_rss_bytes'] / 2**30:.2f} GiB for {child['samples']} samples")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
