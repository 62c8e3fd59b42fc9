"""FP32 CPU compile of every zoo model: onnxruntime latency against torch eager, same process.

Speed is stated as a ratio (torch p50 / edgec p50) measured back to back on
the same machine, because absolute milliseconds on a shared 2-core box are noise.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from compiler.config import CompileConfig
from compiler.pipeline import compile_model

MODELS = ("mobilenet_v2", "resnet18", "digits_cnn", "digits_gru")


def run(out_path: Path, threads: int = 2) -> dict[str, Any]:
    results: dict[str, Any] = {"threads": threads, "batch": 1, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            t0 = time.perf_counter()
            res = compile_model(
                CompileConfig(
                    model=name, out_dir=Path(tmp) / name, threads=threads, reports=("json",)
                )
            )
            r = res.report
            results["models"][name] = {
                "seconds": round(time.perf_counter() - t0, 2),
                "edgec_p50_ms": r["latency_ms"]["p50"],
                "torch_eager_p50_ms": r["baseline"]["torch_latency_ms"],
                "speedup_vs_torch": r["baseline"]["speedup_vs_torch"],
                "top1_agreement": r["accuracy"]["top1_agreement"],
                "max_abs_error": r["accuracy"]["max_abs_error"],
                "top1_accuracy": r["accuracy"]["top1_accuracy"],
                "size_bytes": r["artifact"]["size_bytes"],
            }
            print(f"  {name}: {results['models'][name]}", flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    return results
