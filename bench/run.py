"""`make bench`: every benchmark suite in one process; JSON under bench/results/.

Suites are independent; `python -m bench.run foundation quantize` runs a subset.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SUITES = {
    "foundation": ("bench.foundation", "foundation.json"),
    "quantize": ("bench.quantize_compare", "quantize_compare.json"),
    "quantize_time": ("bench.quantize_time", "quantize_time.json"),
    "prune": ("bench.prune_compare", "prune_compare.json"),
    "reliability": ("bench.reliability", "reliability.json"),
    "calibration_memory": ("bench.calibration_memory", "calibration_memory.json"),
    "qat": ("bench.qat_compare", "qat_compare.json"),
    "artifact_identity": ("bench.artifact_identity", "artifact_identity.json"),
    "fp16": ("bench.fp16_compare", "fp16_compare.json"),
    "corpus": ("bench.corpus", "corpus.json"),
    "transformer": ("bench.transformer_compare", "transformer_compare.json"),
}


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    failed = []
    for name in names:
        if name not in SUITES:
            print(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
            return 2
        module_name, filename = SUITES[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            print(f"[{name}] skipped: {e}")
            continue
        print(f"[{name}] running → {RESULTS / filename}", flush=True)
        t0 = time.perf_counter()
        try:
            module.run(RESULTS / filename)
        except Exception as e:  # one broken suite must not hide the others' results
            print(f"[{name}] FAILED: {type(e).__name__}: {e}")
            failed.append(name)
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
