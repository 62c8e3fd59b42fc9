"""A corpus of architectures nobody on the project wrote (issue #13 part 8): each model
exported with the TorchScript exporter (opset 17) and with the dynamo exporter, each
file compiled for the CPU target in FP32 and in INT8 (`--calib random`).

Pass: FP32 artifact's every output within 1e-4 of the input model's, relative to that
output's scale (max |error| / max |reference|), and the INT8 artifact's first output
at cosine >= 0.98, both against the input file under onnxruntime (graph optimizations
off, as edgec's own reference) on edgec's `--eval random` inputs (seed 0, integer
inputs below their embedding table). A failed export or compile is a result, with
its stage and one-line error.

    python -m bench.corpus [NAME...]   # writes bench/results/corpus.json, prints the table
    python -m bench.corpus --merge NAME...   # reruns those, keeps the file's other rows
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus_case import Case
from bench.corpus_transformers import (
    bert,
    deberta_v2,
    distilbert,
    gpt2_kv,
    llama,
    roberta,
    wav2vec2,
    whisper_encoder,
)
from bench.corpus_vision import timm_classifier, yolo_style
from bench.foreign import export_dynamic

FP32_REL_TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.98
EXPORTERS = ("torchscript", "dynamo")
EVAL_SAMPLES = 4
CALIB_SAMPLES = 16
RESULTS = Path(__file__).parent / "results" / "corpus.json"

#: (model, exporter) -> why it fails today, found by hand (the README's table and the
#: slow test's xfail reasons); every other case must pass
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    # none today: EfficientNet-B0 (INT8 cosine 0.971 / 0.975) passes since the residual
    # stream's ranges are chosen per model (passes/quantize/residual_ranges.py)
}

_TOKENS = (("sequence", 16),)
CASES = (
    Case("resnet18", "CNN", timm_classifier("resnet18", 64)),
    Case("mobilenetv3_small_100", "CNN", timm_classifier("mobilenetv3_small_100", 96)),
    Case("efficientnet_b0", "CNN", timm_classifier("efficientnet_b0", 96)),
    Case("convnext_atto", "CNN", timm_classifier("convnext_atto", 64)),
    Case("densenet121", "CNN", timm_classifier("densenet121", 64)),
    Case("fastvit_t8", "hybrid", timm_classifier("fastvit_t8", 64)),
    Case("mobilevit_xxs", "hybrid", timm_classifier("mobilevit_xxs", 64)),
    Case("vit_tiny_patch16", "ViT", timm_classifier("vit_tiny_patch16_224", 64, img_size=64)),
    Case(
        "swin_tiny_small",
        "ViT",
        timm_classifier(
            "swin_tiny_patch4_window7_224",
            224,
            embed_dim=32,
            depths=(1, 1, 2, 1),
            num_heads=(1, 2, 4, 8),
        ),
    ),
    # session 24's probe and session 29's foreign check, kept since session 30
    Case("ghostnet_100", "CNN", timm_classifier("ghostnet_100", 64)),
    Case("regnetx_002", "CNN", timm_classifier("regnetx_002", 64)),
    Case("mixnet_s", "CNN", timm_classifier("mixnet_s", 64)),
    Case("hrnet_w18_small", "CNN", timm_classifier("hrnet_w18_small", 64)),
    Case("inception_v3", "CNN", timm_classifier("inception_v3", 96)),
    Case("repvgg_a0", "CNN", timm_classifier("repvgg_a0", 64)),
    Case("res2net50_14w_8s", "CNN", timm_classifier("res2net50_14w_8s", 64)),
    Case("levit_128s", "hybrid", timm_classifier("levit_128s", 224)),
    Case("poolformerv2_s12", "hybrid", timm_classifier("poolformerv2_s12", 64)),
    Case("efficientvit_b0", "hybrid", timm_classifier("efficientvit_b0", 64)),
    Case("bert", "encoder LM", bert, _TOKENS),
    Case("distilbert", "encoder LM", distilbert, _TOKENS),
    Case("roberta", "encoder LM", roberta, _TOKENS),
    Case("deberta_v2", "encoder LM", deberta_v2, _TOKENS),
    Case("gpt2_kv_cache", "decoder LM", gpt2_kv, (("sequence", 4), ("past", 8), ("total", 12))),
    Case("llama", "decoder LM", llama, _TOKENS),
    Case("whisper_encoder", "speech", whisper_encoder),
    Case("wav2vec2", "speech", wav2vec2, (("samples", 4000),)),
    Case("yolo_style_mobilenetv3", "detector", yolo_style),
)


def export(case: Case, exporter: str) -> bytes:
    """The case's module as ONNX bytes by `exporter` (torchscript or dynamo)."""
    built = case.build()
    return export_dynamic(
        built.module,
        built.args,
        built.inputs,
        built.outputs,
        axes=built.axes,
        dynamo=exporter == "dynamo",
    )


def model_dims(path: Path, dims: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """The case's --dim sizes for the dynamic dim names the exported file has (an exporter
    may drop a name it proved static, or rename one)."""
    import onnx

    from compiler.data import dim_names

    names = set(dim_names(onnx.load(str(path), load_external_data=False)))
    return tuple((name, size) for name, size in dims if name in names)


def run_case(case: Case, exporter: str, workdir: Path) -> dict[str, Any]:
    """Export, compile FP32 and INT8, judge; every failure recorded with its stage."""
    row: dict[str, Any] = {"model": case.name, "family": case.family, "exporter": exporter}
    stage = "export"
    t0 = time.perf_counter()
    try:
        path = workdir / f"{case.name}_{exporter}.onnx"
        path.write_bytes(export(case, exporter))
        row["export_s"] = round(time.perf_counter() - t0, 1)
        dims = model_dims(path, case.dims)
        stage = "fp32"
        row["fp32"] = compile_and_compare(path, "fp32", dims, workdir)
        stage = "int8"
        row["int8"] = compile_and_compare(path, "int8", dims, workdir)
    except Exception as e:  # a failure is a result: stage and one line
        row["error"] = {"stage": stage, "message": _one_line(e)}
    row["fp32_passed"] = bool(row.get("fp32", {}).get("worst_rel_error", 1.0) <= FP32_REL_TOLERANCE)
    cosine = row.get("int8", {}).get("first_output_cosine")
    row["int8_passed"] = cosine is not None and cosine >= INT8_MIN_COSINE
    row["passed"] = row["fp32_passed"] and row["int8_passed"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def compile_and_compare(
    path: Path, precision: str, dims: tuple[tuple[str, int], ...], workdir: Path
) -> dict[str, Any]:
    """Compile `path` with edgec in-process, then every output of the artifact against
    the input file's on edgec's evaluation inputs (report numbers kept beside)."""
    from compiler.config import CompileConfig
    from compiler.pipeline import compile_model

    config = CompileConfig(
        model=str(path),
        target="cpu",
        precision=precision,
        dims=dims,
        out_dir=workdir / f"{path.stem}_{precision}",
        reports=("json",),
        eval_samples=EVAL_SAMPLES,
        calib_source="random" if precision == "int8" else None,
        calib_samples=CALIB_SAMPLES if precision == "int8" else None,
        torch_baseline=False,
    )
    result = compile_model(config)
    feeds = eval_feeds(path, dims)
    reference = run_onnx(path, feeds, optimize=False)
    candidate = run_onnx(result.artifact, feeds, optimize=True)
    outputs = {name: compare(reference[name], candidate[name]) for name in reference}
    first = next(iter(reference))
    report_outputs = result.report["accuracy"].get("outputs") or {}
    return {
        "outputs": outputs,
        "worst_rel_error": max(o["rel_error"] for o in outputs.values()),
        "first_output_cosine": outputs[first]["cosine"],
        "report_cosine": {k: v.get("cosine") for k, v in report_outputs.items()},
        "report_max_abs_error": {k: v.get("max_abs_error") for k, v in report_outputs.items()},
        "artifact_bytes": result.artifact.stat().st_size,
    }


def eval_feeds(path: Path, dims: tuple[tuple[str, int], ...]) -> dict[str, np.ndarray]:
    """edgec's `--eval random` inputs for this file: the same seed, shapes and ranges."""
    import onnx

    from compiler.data import graph_inputs, random_feeds

    proto = onnx.load(str(path), load_external_data=False)
    return random_feeds(graph_inputs(proto, dims=dict(dims)), EVAL_SAMPLES, seed=0)


def run_onnx(path: Path, feeds: dict[str, np.ndarray], *, optimize: bool) -> dict[str, np.ndarray]:
    """Every output, one sample at a time (as edgec evaluates at batch 1), stacked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    n = next(iter(feeds.values())).shape[0]
    runs = [session.run(names, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
    return {name: np.concatenate([r[j] for r in runs]) for j, name in enumerate(names)}


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """max |error|, that relative to max |reference|, and the mean per-sample cosine."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    max_abs = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    a, b = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    return {
        "max_abs_error": max_abs,
        "scale": scale,
        "rel_error": rel if np.isfinite(rel) else float("inf"),
        "cosine": float(np.mean(cos)) if np.all(np.isfinite(cos)) else float("nan"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table: model, family, exporter, FP32 worst relative error, INT8
    first-output cosine, pass/fail, the error line or the known cause of a failure."""
    lines = [
        "| model | family | exporter | FP32 worst rel. error | INT8 cosine | result | error or cause |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fp32 = row.get("fp32", {}).get("worst_rel_error")
        cos = row.get("int8", {}).get("first_output_cosine")
        err = row.get("error")
        why = f"{err['stage']}: {err['message']}" if err else ""
        if not row["passed"]:
            known = KNOWN_FAILURES.get((row["model"], row["exporter"]))
            why = f"{why} ({known})" if why and known else why or known or ""
        lines.append(
            f"| {row['model']} | {row['family']} | {row['exporter']} | {_number(fp32, '.1e')} | "
            f"{_number(cos, '.4f')} | {'pass' if row['passed'] else 'FAIL'} | "
            f"{why.replace('|', '/')} |"
        )
    return "\n".join(lines)


def _number(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec) if np.isfinite(value) else "NaN/inf"


def run(
    out: Path = RESULTS, names: list[str] | None = None, *, merge: bool = False
) -> list[dict[str, Any]]:
    """The named cases (all by default), both exporters; JSON to `out` (`make bench`'s
    corpus suite), one table row printed per result as it lands. `merge` keeps the rows
    `out` already has for cases not run now (new ones replace theirs), in CASES order:
    a few new cases need not cost a rerun of the whole corpus."""
    cases = [c for c in CASES if not names or c.name in names]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for exporter in EXPORTERS:
                rows.append(run_case(case, exporter, Path(tmp)))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    document: dict[str, Any] = {"environment": _versions(), "rows": rows}
    if merge and out.exists():
        document = merged(json.loads(out.read_text()), rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    return rows


def merged(old: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`old`'s results with `rows` in place of its rows for the same (model, exporter),
    ordered as CASES and EXPORTERS; rows of cases no longer in CASES are dropped."""
    by_key = {(r["model"], r["exporter"]): r for r in old.get("rows", [])}
    by_key.update({(r["model"], r["exporter"]): r for r in rows})
    order = [(c.name, e) for c in CASES for e in EXPORTERS]
    return {**old, "environment": _versions(), "rows": [by_key[k] for k in order if k in by_key]}


def main(argv: list[str]) -> int:
    """`[--out PATH] [--merge] [NAME...]`."""
    out = RESULTS
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]), argv[2:]
    merge = "--merge" in argv
    argv = [a for a in argv if a != "--merge"]
    known = {c.name for c in CASES}
    unknown = [a for a in argv if a not in known]
    if unknown:  # `--help` or a typo must not overwrite the results with an empty run
        print(
            "usage: python -m bench.corpus [--out PATH] [--merge] [NAME...];"
            f" unknown: {' '.join(unknown)}"
        )
        print(f"names: {' '.join(sorted(known))}")
        return 2
    print(markdown(run(out, argv, merge=merge)))
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("torch", "onnx", "onnxruntime-gpu", "onnxscript", "transformers", "timm")
    return {name: version(name) for name in packages}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
