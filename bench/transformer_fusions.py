"""edgec's transformer fusions against onnxruntime's transformer optimizer, one process.

Models: `bench.foreign.bert_bytes()` (random-init 2-layer BERT, hidden 128, 2 heads;
TorchScript export, opset 17, dynamic batch and sequence) and, unless ``--small``,
a BERT-base-shaped one (12 layers, hidden 768, 12 heads, random init seed 0, the
same exporter). Candidates, all FP32:

- plain: the exported model as it is;
- ort_optimizer: `onnxruntime.transformers.optimizer.optimize_model(path,
  model_type="bert", num_heads, hidden_size)`;
- edgec_none: edgec's optimize stage without transformer fusions (before issue #14);
- edgec_onnxruntime / edgec_quantizable / edgec_portable: the optimize stage with
  the cpu target's flavour, with `keep_weighted_matmuls` (what INT8 gets), and
  the TensorRT flavour.

Measured: node-type histograms of each file; the fusion passes' match counts;
max |error| of every output against plain at batch 2 and two sequence lengths
(128 and 64, the first row a quarter padding); latency at batch 1, sequence 128,
2 intra-op threads (onnxruntime CPU EP, every graph optimization on, as the
deployed runner), all candidates alternating in paired rounds
(`targets.latency.measure_interleaved`); ratios are per-round medians.
"""

from __future__ import annotations

import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from bench.foreign import bert_base_bytes, bert_bytes, bert_feeds
from compiler.ground.sessions import open_session, session_options
from compiler.stages.optimize import optimize
from targets.latency import latency_ratio, measure_interleaved

RESULTS = Path(__file__).parent / "results"
THREADS = 2
SEQUENCE = 128

EDGEC = {  # candidate -> (fusions, keep_weighted_matmuls)
    "edgec_none": (None, False),
    "edgec_onnxruntime": ("onnxruntime", False),
    "edgec_quantizable": ("onnxruntime", True),
    "edgec_portable": ("portable", False),
}


def histogram(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def candidates(data: bytes, folder: Path, heads: int, hidden: int) -> dict[str, Any]:
    """Write every candidate into `folder`; their paths, match counts and build seconds."""
    plain = folder / "plain.onnx"
    plain.write_bytes(data)
    out: dict[str, Any] = {"paths": {"plain": plain}, "matches": {}, "seconds": {}}
    from onnxruntime.transformers.optimizer import optimize_model

    t0 = time.perf_counter()
    opt = optimize_model(str(plain), model_type="bert", num_heads=heads, hidden_size=hidden)
    out["seconds"]["ort_optimizer"] = round(time.perf_counter() - t0, 2)
    out["paths"]["ort_optimizer"] = folder / "ort_optimizer.onnx"
    opt.save_model_to_file(str(out["paths"]["ort_optimizer"]))
    for name, (fusions, keep) in EDGEC.items():
        t0 = time.perf_counter()
        model, records = optimize(
            ir.from_proto(onnx.load_from_string(data)), fusions=fusions, keep_weighted_matmuls=keep
        )
        out["seconds"][name] = round(time.perf_counter() - t0, 2)
        out["matches"][name] = {r.name: r.matches for r in records if r.matches is not None}
        out["paths"][name] = folder / f"{name}.onnx"
        ir.save(model, out["paths"][name])
    return out


def errors(paths: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Max |error| of every output against plain, at batch 2 and sequence 128 and 64."""
    rng = np.random.default_rng(1)
    feeds = [bert_feeds(rng, 2, SEQUENCE), bert_feeds(rng, 2, SEQUENCE // 2)]
    sessions = {k: open_session(str(p), session_options(threads=THREADS)) for k, p in paths.items()}
    refs = [sessions["plain"].run(None, f) for f in feeds]
    result: dict[str, dict[str, float]] = {}
    for name, session in sessions.items():
        result[name] = {}
        for f, ref in zip(feeds, refs, strict=True):
            got = session.run(None, f)
            err = max(float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True))
            result[name][f"sequence_{f['input_ids'].shape[1]}"] = err
    return result


def latency(paths: dict[str, Path], max_rounds: int) -> dict[str, Any]:
    """p50 per candidate and paired ratios to plain and to onnxruntime's optimizer."""
    feeds = bert_feeds(np.random.default_rng(0), 1, SEQUENCE)
    sessions = {k: open_session(str(p), session_options(threads=THREADS)) for k, p in paths.items()}
    fns = {k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}
    stats = measure_interleaved(fns, threads=THREADS, min_rounds=max_rounds, max_rounds=max_rounds)
    return {
        "p50_ms": {k: round(v.p50, 3) for k, v in stats.items()},
        "ratio_to_plain": {k: round(latency_ratio(v, stats["plain"]), 3) for k, v in stats.items()},
        "ratio_to_ort_optimizer": {
            k: round(latency_ratio(v, stats["ort_optimizer"]), 3) for k, v in stats.items()
        },
        "rounds": max_rounds,
    }


def run_model(name: str, data: bytes, heads: int, hidden: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        built = candidates(data, Path(tmp), heads, hidden)
        paths = built["paths"]
        return {
            "model": name,
            "heads": heads,
            "hidden": hidden,
            "nodes": {k: histogram(p) for k, p in paths.items()},
            "matches": built["matches"],
            "build_seconds": built["seconds"],
            "max_abs_error_vs_plain": errors(paths),
            "latency": latency(paths, rounds),
        }


def main(small: bool) -> None:
    rows = [run_model("bert_2layer_h128", bert_bytes(), 2, 128, rounds=30)]
    if not small:
        rows.append(run_model("bert_base_shape", bert_base_bytes(), 12, 768, rounds=6))
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "threads": THREADS,
        "batch": 1,
        "sequence": SEQUENCE,
        "models": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "transformer_fusions.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(small="--small" in sys.argv)
