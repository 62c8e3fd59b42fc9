"""edgec against onnxruntime's own transformer path (issue #14's bench), one process per run.

Two models, batch 1, sequence 128, 2 threads, onnxruntime's CPU provider:

- `minilm_l6`: the zoo's all-MiniLM-L6-v2 (real weights, mean pooling in the graph),
  judged on its held-out evaluation sentences (300), calibrated on its own
  calibration sentences (disjoint);
- `bert_base`: a random-init BERT of BERT-base's shape (`bench.foreign`), judged on
  seeded random token ids (32 sequences), calibrated on others.

Candidates, all from the same exported FP32 file:

- `fp32`: that file as exported (the baseline of every ratio);
- `ort_optimizer_fp32`: `onnxruntime.transformers.optimizer.optimize_model`
  (model_type "bert", the model's heads and hidden size);
- `ort_optimizer_int8_dynamic`: that, then `quantize_dynamic` with per-channel int8
  weights (onnxruntime's best CPU INT8 path for BERT);
- `edgec_fp32`, `edgec_int8` (static), `edgec_int8_dynamic`: `edgec compile` with
  `--precision fp32|int8` and `--quant-mode static|dynamic`.

Measured per candidate: op-type histogram, size, latency as the median of paired
block ratios to `fp32` (all candidates timed in one `measure_interleaved` call:
alternating blocks, rotating order), and the first output's cosine to `fp32` per
sample (mean and worst).
"""

from __future__ import annotations

import collections
import functools
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

RESULTS = Path(__file__).parent / "results"
THREADS = 2
SEQUENCE = 128


def _step(what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {what}", flush=True)


def _histogram(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    counts = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node
    )
    return dict(counts.most_common())


def _session(path: Path) -> Any:
    from compiler.ground.sessions import open_session, session_options

    return open_session(path, session_options(threads=THREADS))


def _outputs(session: Any, samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    """First output of every sample, flattened per sample."""
    names = {i.name for i in session.get_inputs()}
    rows = [
        session.run(None, {k: v for k, v in feeds.items() if k in names})[0].reshape(-1)
        for feeds in samples
    ]
    return np.stack(rows).astype(np.float64)


def _cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    num = (ref * out).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return num / np.maximum(den, 1e-30)


def _ort_optimizer(src: Path, work: Path, heads: int, hidden: int) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1
    )
    out = work / "ort_optimizer_fp32.onnx"
    optimized.save_model_to_file(str(out))
    return out


def _ort_dynamic(src: Path, work: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work / "ort_optimizer_int8_dynamic.onnx"
    # the optimizer's contrib ops (SkipLayerNormalization) defeat its shape inference:
    # without a default type quantize_dynamic refuses the MatMul outputs they read
    quantize_dynamic(
        str(src),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return out


def _edgec(model: str, work: Path, tag: str, **options: Any) -> Path:
    from compiler.config import CompileConfig
    from compiler.pipeline import compile_model

    result = compile_model(
        CompileConfig(
            model=model,
            out_dir=work / tag,
            threads=THREADS,
            dims=(("sequence", SEQUENCE),),
            reports=("json",),
            torch_baseline=False,
            **options,
        )
    )
    return Path(result.report["artifact"]["path"])


def _candidates(
    model: str, src: Path, work: Path, heads: int, hidden: int, calib: str | None
) -> dict[str, Callable[[], Path]]:
    optimizer = functools.cache(lambda: _ort_optimizer(src, work, heads, hidden))
    return {
        "fp32": lambda: src,
        "ort_optimizer_fp32": optimizer,
        "ort_optimizer_int8_dynamic": lambda: _ort_dynamic(optimizer(), work),
        "edgec_fp32": lambda: _edgec(model, work, "edgec_fp32"),
        "edgec_int8": lambda: _edgec(
            model, work, "edgec_int8", precision="int8", calib_source=calib, quant_mode="static"
        ),
        "edgec_int8_dynamic": lambda: _edgec(
            model,
            work,
            "edgec_int8_dynamic",
            precision="int8",
            calib_source=calib,
            quant_mode="dynamic",
        ),
    }


def _build(candidates: dict[str, Callable[[], Path]]) -> tuple[dict[str, Path], dict[str, Any]]:
    paths: dict[str, Path] = {}
    rows: dict[str, Any] = {}
    for name, make in candidates.items():
        _step(f"build {name}")
        t0 = time.perf_counter()
        try:
            paths[name] = make()
        except Exception as e:  # a candidate that cannot be built is a result, not a crash
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        rows[name] = {
            "build_seconds": round(time.perf_counter() - t0, 1),
            "size_mb": round(paths[name].stat().st_size / 1e6, 2),
            "nodes": _histogram(paths[name]),
        }
    return paths, rows


def _judge(
    paths: dict[str, Path], rows: dict[str, Any], samples: list[dict[str, np.ndarray]], block: int
) -> None:
    from targets.latency import latency_ratio, measure_interleaved

    sessions = {name: _session(path) for name, path in paths.items()}
    _step(f"outputs on {len(samples)} samples")
    ref = _outputs(sessions["fp32"], samples)
    for name, session in sessions.items():
        cos = _cosines(ref, _outputs(session, samples))
        rows[name].update(
            cosine_mean=round(float(cos.mean()), 5), cosine_worst=round(float(cos.min()), 5)
        )
        rows[name]["size_vs_fp32"] = round(rows[name]["size_mb"] / rows["fp32"]["size_mb"], 3)
    feeds = samples[0]
    fns = {}
    for name, s in sessions.items():
        names = {i.name for i in s.get_inputs()}
        fns[name] = functools.partial(s.run, None, {k: v for k, v in feeds.items() if k in names})
    _step("latency (paired blocks)")
    stats = measure_interleaved(
        fns,
        threads=THREADS,
        warmup=3,
        round_size=block,
        min_rounds=8,
        max_rounds=8,
        max_seconds=900,
    )
    for name, st in stats.items():
        rows[name]["p50_ms"] = round(st.p50, 3)
        rows[name]["latency_vs_fp32"] = round(latency_ratio(st, stats["fp32"]), 3)


def _minilm(work: Path) -> tuple[Path, list[dict[str, np.ndarray]], str | None, int, int]:
    from compiler.sources import resolve
    from models.registry import get_model

    source = resolve("minilm_l6", input_shape=None, opset=17)
    path = work / "minilm_l6.onnx"
    onnx.save(source.proto, str(path))
    data, _ = get_model("minilm_l6").evaluation_data(300)
    assert isinstance(data, dict)
    samples = [{k: v[i : i + 1] for k, v in data.items()} for i in range(len(data["input_ids"]))]
    return path, samples, None, 12, 384


def _bert_base(work: Path) -> tuple[Path, list[dict[str, np.ndarray]], str | None, int, int]:
    from bench.foreign import bert_base_bytes, bert_feeds

    path = work / "bert_base.onnx"
    path.write_bytes(bert_base_bytes())
    calib = work / "bert_base_calib.npz"
    np.savez(calib, **bert_feeds(np.random.default_rng(1), 64, SEQUENCE))
    held_out = bert_feeds(np.random.default_rng(2), 32, SEQUENCE)
    samples = [{k: v[i : i + 1] for k, v in held_out.items()} for i in range(32)]
    return path, samples, str(calib), 12, 768


MODELS = {"minilm_l6": (_minilm, 20), "bert_base": (_bert_base, 3)}


def run(out_path: Path, models: tuple[str, ...] = tuple(MODELS)) -> dict[str, Any]:
    import onnxruntime

    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "threads": THREADS,
        "batch": 1,
        "sequence": SEQUENCE,
        "models": {},
    }
    for model in models:
        prepare, block = MODELS[model]
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _step(f"{model}: export")
            src, samples, calib, heads, hidden = prepare(work)
            zoo_or_file = model if model == "minilm_l6" else str(src)
            paths, rows = _build(_candidates(zoo_or_file, src, work, heads, hidden, calib))
            _judge(paths, rows, samples, block)
        results["models"][model] = rows
        print(
            json.dumps(
                {model: {k: {x: y for x, y in v.items() if x != "nodes"} for k, v in rows.items()}},
                indent=1,
            )
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    import sys

    run(RESULTS / "transformer_compare.json", tuple(sys.argv[1:]) or tuple(MODELS))
