"""edgec's FP16 pass against onnxconverter-common's `convert_float_to_float16`, one process.

Both start from the same FP32 graph: the zoo's mobilenet_v2 (torchvision's
ImageNet weights), digits_cnn and digits_gru (exported and optimized by edgec's
cleanup + fusion passes), and two random-init transformers (no download), exported
by torch.onnx (TorchScript exporter, opset 17) with dynamic batch and sequence:
BERT (2 layers, hidden 128; input_ids / attention_mask / token_type_ids) and GPT-2
(2 layers, hidden 128, vocabulary 1000; input_ids / attention_mask); and a stress
case, `rmsnorm_mlp`: an RMSNorm written out as LLM code does, on hidden values of a
few hundred, so its x^2 exceeds float16's range.

Converters, each with float16 I/O and with float32 I/O (keep_io_types):

- edgec: `passes.precision.Fp16Pass` with its defaults on the calibration data
  (zoo: the model's calibration set; transformers: seeded random token ids);
- edgec_data_only: the same with no op-type or normalization rules
  (``keep_op_types=()``, ``keep_norm_statistics=False``): only the data decides;
- onnxconverter-common: `float16.convert_float_to_float16` with its defaults (its
  op block list; it clamps weights to [1e-7, 1e4] in magnitude).

Measured on held-out inputs (zoo: the evaluation split; transformers: other seeds
and other shapes than calibration): whether onnxruntime (CPU provider) loads and
runs the artifact; cosine and max |error| of the first output against FP32 and
top-1 agreement (classifiers), twice: as onnxruntime's CPU runs the artifact
(`onnxruntime_cpu`; it computes float16 ops that lack CPU kernels in float32 and
keeps the tensors between consecutive such ops in float32) and with every float16
tensor stored in float16 (`float16_storage`, `passes.precision.emulate`: what a GPU
computing in float32 and storing float16 gets); artifact size / FP32 size; nodes
kept float32 (edgec: by reason; onnxconverter-common: nodes of its block list);
Casts in the artifact; conversion seconds.
"""

from __future__ import annotations

import collections
import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from bench.foreign import BERT_VOCAB, GPT2_VOCAB, bert_bytes, gpt2_bytes, token_feeds
from compiler.ground.sessions import open_session, session_options
from passes.precision import Fp16Options, Fp16Pass
from passes.precision.emulate import emulate_float16_storage

RESULTS = Path(__file__).parent / "results"
THREADS = 2
ZOO = {  # name -> (calibration samples, evaluation samples)
    "mobilenet_v2": (32, 128),
    "digits_cnn": (64, 512),
    "digits_gru": (64, 512),
}
Feeds = dict[str, np.ndarray]


def _zoo(name: str, n_cal: int, n_eval: int) -> tuple[onnx.ModelProto, list[Feeds], list[Feeds]]:
    from compiler.export import export_torch
    from compiler.stages.optimize import optimize
    from models.registry import get_model

    spec = get_model(name)
    feed = spec.inputs[0].name
    cal = spec.calibration_data(n_cal)
    x, _ = spec.evaluation_data(n_eval)
    proto = export_torch(
        spec.build(), [cal[:1]], input_names=[feed], output_names=list(spec.output_names)
    )
    model, _ = optimize(ir.from_proto(proto))
    evaluation = [{feed: x[i : i + 32]} for i in range(0, len(x), 32)]
    return ir.to_proto(model), [{feed: cal}], evaluation


def _transformer_data(vocab: int, segments: bool) -> tuple[list[Feeds], list[Feeds]]:
    rng = np.random.default_rng(0)
    calibration = [token_feeds(rng, vocab, 8, 32, segments=segments) for _ in range(4)]
    shapes = [(8, 24), (4, 64), (1, 7), (16, 16)]
    evaluation = [token_feeds(rng, vocab, b, s, segments=segments) for b, s in shapes]
    return calibration, evaluation


def _bert() -> tuple[onnx.ModelProto, list[Feeds], list[Feeds]]:
    return (onnx.load_from_string(bert_bytes()), *_transformer_data(BERT_VOCAB, True))


def _gpt2() -> tuple[onnx.ModelProto, list[Feeds], list[Feeds]]:
    return (onnx.load_from_string(gpt2_bytes()), *_transformer_data(GPT2_VOCAB, False))


def _rmsnorm_mlp() -> tuple[onnx.ModelProto, list[Feeds], list[Feeds]]:
    """Linear -> RMSNorm written out (x * rsqrt(mean(x^2) + eps), as LLM code does) ->
    ReLU -> Linear, random init, on inputs of scale 100: the hidden values reach a few
    hundred (like the outlier features of LLM residual streams), so x^2 passes 65504."""
    import torch

    torch.manual_seed(0)

    class RmsMlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 256)
            self.gain = torch.nn.Parameter(torch.ones(256))
            self.fc2 = torch.nn.Linear(256, 10)

        def forward(self, x: Any) -> Any:
            h = self.fc1(x)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.gain
            return self.fc2(torch.relu(h))

    from compiler.export import export_torch

    rng = np.random.default_rng(0)
    cal = (rng.standard_normal((256, 64)) * 100).astype(np.float32)
    x = (rng.standard_normal((512, 64)) * 100).astype(np.float32)
    proto = export_torch(RmsMlp(), [cal[:1]], input_names=["x"], output_names=["logits"])
    return proto, [{"x": cal}], [{"x": x[i : i + 128]} for i in range(0, 512, 128)]


def _edgec(
    proto: onnx.ModelProto, calibration: list[Feeds], keep_io: bool, data_only: bool = False
) -> dict[str, Any]:
    t0 = time.perf_counter()
    rules: dict[str, Any] = {"keep_op_types": (), "keep_norm_statistics": False}
    options = Fp16Options(
        keep_io_types=keep_io, samples=None, threads=THREADS, **(rules if data_only else {})
    )
    result = Fp16Pass(calibration, options)(ir.from_proto(proto))
    seconds = time.perf_counter() - t0
    summary = result.summary  # type: ignore[attr-defined]  # Fp16PassResult
    return {
        "model": ir.to_proto(result.model),
        "seconds": round(seconds, 2),
        "kept_float32": len(summary.kept),
        "kept_by_reason": summary.kept_by_reason(),
        "kept": [f"{k.op_type} {k.name}: {k.reason}" for k in summary.kept][:20],
        "calibration_samples": summary.samples,
    }


def _onnxconverter(proto: onnx.ModelProto, keep_io: bool) -> dict[str, Any]:
    from onnxconverter_common import float16

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(proto, keep_io_types=keep_io)
    except Exception as e:  # noqa: BLE001 - a refusal is a result
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    blocked = set(float16.DEFAULT_OP_BLOCK_LIST)
    kept = [n for n in proto.graph.node if n.op_type in blocked]
    return {
        "model": converted,
        "seconds": round(time.perf_counter() - t0, 2),
        "kept_float32": len(kept),
        "kept_by_reason": dict(collections.Counter(f"block list: {n.op_type}" for n in kept)),
    }


def _run_all(session: Any, evaluation: list[Feeds]) -> list[list[np.ndarray]]:
    half = {i.name for i in session.get_inputs() if i.type == "tensor(float16)"}
    outs = []
    for feeds in evaluation:
        fixed = {k: v.astype(np.float16) if k in half else v for k, v in feeds.items()}
        outs.append(session.run(None, fixed))
    return outs


def _metrics(outs: list[list[np.ndarray]], refs: list[list[np.ndarray]]) -> dict[str, Any]:
    o = np.concatenate([b[0].astype(np.float64).ravel() for b in outs])
    r = np.concatenate([b[0].astype(np.float64).ravel() for b in refs])
    finite = bool(np.isfinite(o).all())
    result: dict[str, Any] = {
        "finite": finite,
        "cosine": round(float(o @ r / (np.linalg.norm(o) * np.linalg.norm(r))), 8)
        if finite
        else None,
        "max_abs_error": float(np.abs(o - r).max()) if finite else None,
    }
    if refs[0][0].ndim == 2 and refs[0][0].shape[1] > 1:
        top = [(a[0].argmax(1) == b[0].argmax(1)) for a, b in zip(outs, refs, strict=True)]
        result["top1_agreement"] = round(float(np.concatenate(top).mean()), 4)
    return result


def _measure(
    fp32: onnx.ModelProto, candidate: onnx.ModelProto, evaluation: list[Feeds]
) -> dict[str, Any]:
    """Load and run on onnxruntime CPU, then the same with float16 storage emulated."""
    options = session_options(threads=THREADS)
    data = candidate.SerializeToString()
    try:
        session = open_session(data, options)
    except Exception as e:  # noqa: BLE001 - not loading is the measurement
        return {"loads": False, "error": " ".join(str(e).split())[:300]}
    try:
        outs = _run_all(session, evaluation)
    except Exception as e:  # noqa: BLE001 - failing at run time is the measurement
        return {"loads": True, "runs": False, "error": " ".join(str(e).split())[:300]}
    refs = _run_all(open_session(fp32.SerializeToString(), options), evaluation)
    emulated = ir.to_proto(emulate_float16_storage(ir.from_proto(candidate)))
    stored = _run_all(open_session(emulated.SerializeToString(), options), evaluation)
    return {
        "loads": True,
        "runs": True,
        "size_ratio": round(len(data) / len(fp32.SerializeToString()), 4),
        "casts": sum(n.op_type == "Cast" for n in candidate.graph.node),
        "onnxruntime_cpu": _metrics(outs, refs),
        "float16_storage": _metrics(stored, refs),
    }


def _compare(
    name: str, load: Callable[[], tuple[onnx.ModelProto, list[Feeds], list[Feeds]]]
) -> dict[str, Any]:
    proto, calibration, evaluation = load()
    row: dict[str, Any] = {"fp32_nodes": len(proto.graph.node)}
    for keep_io in (False, True):
        io_name = "fp32_io" if keep_io else "fp16_io"
        for tool in ("edgec", "edgec_data_only", "onnxconverter_common"):
            if tool == "onnxconverter_common":
                entry = _onnxconverter(proto, keep_io)
            else:
                entry = _edgec(proto, calibration, keep_io, data_only=tool != "edgec")
            model = entry.pop("model", None)
            if model is not None:
                entry.update(_measure(proto, model, evaluation))
            row[f"{tool}/{io_name}"] = entry
            print(f"  {name} {tool} {io_name}: {_line(entry)}", flush=True)
    return row


def _line(entry: dict[str, Any]) -> str:
    if not entry.get("runs"):
        return "FAILS: " + str(entry.get("error", ""))[:120]
    cpu, stored = entry["onnxruntime_cpu"], entry["float16_storage"]
    keys = ("cosine", "max_abs_error", "top1_agreement")
    return (
        f"size {entry['size_ratio']}, kept {entry['kept_float32']}; cpu "
        + " ".join(f"{k}={cpu.get(k)}" for k in keys if k in cpu)
        + "; fp16 storage "
        + " ".join(f"{k}={stored.get(k)}" for k in keys if k in stored)
    )


def run(out_path: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "threads": THREADS,
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
        "onnxconverter_common": _version("onnxconverter-common"),
        "method": __doc__.split("\n\n", 1)[1] if __doc__ else "",
        "models": {},
    }
    loaders: dict[str, Callable[[], Any]] = {
        name: (lambda n=name, c=c, e=e: _zoo(n, c, e)) for name, (c, e) in ZOO.items()
    }
    loaders.update({"bert": _bert, "gpt2": _gpt2, "rmsnorm_mlp": _rmsnorm_mlp})
    for name, load in loaders.items():
        results["models"][name] = _compare(name, load)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    run(RESULTS / "fp16_compare.json")
