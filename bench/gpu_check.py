"""The prepared GPU check: onnxruntime's CUDA provider on a real NVIDIA GPU.

`make gpu-check` (that is `python3 bench/gpu_check.py`) on a machine with an
NVIDIA GPU, in this checkout's root:

1. installs the wheels carried with the tree (`bench/gpu_wheels.sh` downloads
   them into `.whl/`, split into parts small enough for one transfer each; the
   parts are joined here from `.whl/**` and `/tmp/edgec-whl/`, checked against
   `SHA256SUMS`, installed with `pip --no-index --no-deps --target` into a
   private folder, and this script starts again with that folder first on
   `PYTHONPATH`, ahead of the machine's own CPU-only onnxruntime);
2. runs the `gpu`-marked tests (`pytest -m gpu tests/targets/test_cuda.py`);
3. for mobilenet_v2 and resnet18 (the zoo) and a random-init transformers BERT,
   on the CUDA provider: accuracy of FP32 on CUDA (TF32 off, as edgec runs it)
   and of TF32 against FP32 on the CPU, of FP16 against FP32 on CUDA, and
   latency of FP16 (and of FP32 with host copies, and with CUDA graphs) paired
   with FP32 in alternating rounds (`targets.latency.measure_interleaved`),
   timed with IO binding (`targets.latency.timed_call`). FP16 needs the FP16
   pass (`passes.precision`); without it that part is skipped with the reason;
4. writes `docs/gpu-results.md` and `bench/results/gpu_check.json` (and copies
   them to `--copy-to DIR`), all within `--budget` seconds (default 470: under 8
   minutes with the install); a model that does not fit is skipped, and one
   that fails is reported with its error, never hiding the others.

The exit status is 0 when the tests passed (none skipped for want of a GPU) and
every model was measured, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGING = Path("/tmp/edgec-whl")
SITE = Path("/tmp/edgec-gpu-site")
RESULTS_MD = ROOT / "docs" / "gpu-results.md"
RESULTS_JSON = ROOT / "bench" / "results" / "gpu_check.json"
MODELS = ("mobilenet_v2", "resnet18", "bert")
CUDA = "CUDAExecutionProvider"
CPU = ("CPUExecutionProvider",)
_CHILD = "EDGEC_GPU_CHECK_T0"  # set once the wheels are installed: the start time

HOW_TO_RUN = """## How to run

On a machine with an NVIDIA GPU, its driver, CUDA 13 and cuDNN 9 (PyTorch's
`nvidia-*` wheels will do) and Python 3.12, in the checkout's root:

    make gpu-check        # = python3 bench/gpu_check.py

It runs the `gpu`-marked tests, measures mobilenet_v2, resnet18 and a
random-init BERT on onnxruntime's CUDA provider (FP32, TF32, FP16 when the
FP16 pass exists) and rewrites this file and `bench/results/gpu_check.json`,
in under 8 minutes (`--budget`). Options: `--models`, `--batches`,
`--no-cuda-graph`, `--copy-to DIR`.

A machine that cannot reach a package index gets its wheels carried: where
pip works, `bash bench/gpu_wheels.sh` downloads onnxruntime-gpu (cp312, about
240 MB) and the few other wheels the check needs into `.whl/` (git-ignored),
split into transfer folders `.whl/t00`, `.whl/t01`, ... of at most 56 MiB and
a `SHA256SUMS`. Bring every folder to the machine, into the checkout's `.whl/`
or `/tmp/edgec-whl/` (one folder per transfer where a transfer is limited to
64 MiB, back to back while the machine stays up; the script prints the
sequence). The check joins the parts, verifies their sha256 and installs them
with `pip --no-index --no-deps --target /tmp/edgec-gpu-site`, ahead of the
machine's own onnxruntime.
"""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if _CHILD not in os.environ:
        return _install_then_restart(args, argv)
    t0 = float(os.environ[_CHILD])
    deadline = t0 + args.budget
    sys.path.insert(0, str(ROOT))
    env = environment()
    _say(f"environment: {json.dumps(env)}")
    rehearsal = args.dry_run_on_cpu is not None
    if rehearsal:
        tests = {"passed": True, "summary": "not run (rehearsal on the CPU)", "output": ""}
    else:
        tests = run_gpu_tests(deadline)
    _say(f"gpu tests: {tests['summary']}")
    fp16, fp16_note = fp16_converter()
    _say(f"fp16: {fp16_note}")
    models: dict[str, Any] = {}
    for name in args.models:
        needs = 150 if name == "bert" else 75  # seconds a model takes at least, about
        if time.monotonic() > deadline - needs:
            models[name] = {"skipped": f"not started: under {needs} s of the budget were left"}
            continue
        _say(f"{name} ...")
        try:
            models[name] = compare_model(name, fp16, args, deadline)
        except Exception as e:  # one model's failure is a result, not the end of the check
            models[name] = {"error": f"{type(e).__name__}: {_first_line(e)}"}
        _say(f"{name}: {json.dumps(models[name])[:600]}")
    results = {
        "seconds": round(time.monotonic() - t0, 1),
        "environment": env,
        "gpu_tests": tests,
        "fp16": fp16_note,
        "models": models,
    }
    if rehearsal:
        results["rehearsal"] = "on the CPU provider: the CUDA columns are CPU numbers"
    write_results(results, args.dry_run_on_cpu, args.copy_to)
    ok = tests["passed"] and all("latency" in m for m in models.values())
    return 0 if ok else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS)
    )
    p.add_argument("--budget", type=float, default=470.0, help="seconds for everything")
    p.add_argument("--batches", default="1,32", help="latency batch sizes (comma-separated)")
    p.add_argument("--eval-samples", type=int, default=64)
    p.add_argument("--bert-layers", type=int, default=12, help="BERT-base has 12")
    p.add_argument("--seq", type=int, default=128, help="BERT sequence length")
    p.add_argument("--no-cuda-graph", action="store_true", help="skip the CUDA-graph timings")
    p.add_argument("--copy-to", type=Path, default=None, help="also copy the results here")
    p.add_argument(
        "--dry-run-on-cpu",
        type=Path,
        default=None,
        metavar="DIR",
        help="rehearse everything on the CPU provider (no TF32, no CUDA graphs, no gpu tests); "
        "results go to DIR, not docs/",
    )
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def _say(line: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {line}", flush=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return " ".join(text[0].split())[:400] if text else type(e).__name__


# --- 1. the wheels -----------------------------------------------------------------------


def _install_then_restart(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Install the carried wheels (if any) into SITE, then run this script again with
    SITE first on PYTHONPATH; without wheels, run on what the machine has."""
    t0 = time.monotonic()
    env = dict(os.environ, **{_CHILD: repr(t0)})
    wheels: list[Path] = []
    if args.dry_run_on_cpu is None:  # the rehearsal runs on what this machine has
        wheels = gather_wheels(
            [ROOT / ".whl", STAGING], Path(tempfile.mkdtemp(prefix="edgec-whl-"))
        )
    if wheels:
        _say(f"installing {len(wheels)} wheels: {', '.join(w.name for w in wheels)}")
        shutil.rmtree(SITE, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
            + ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE)]
            + [str(w) for w in wheels],
            check=True,
        )
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(ROOT), env.get("PYTHONPATH", "")])
        _say(f"installed in {time.monotonic() - t0:.0f} s")
    else:
        _say("no wheels in .whl/ or /tmp/edgec-whl/: using the installed onnxruntime")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    script = [
        sys.executable,
        str(Path(__file__).resolve()),
        *(sys.argv[1:] if argv is None else argv),
    ]
    return subprocess.run(script, env=env, cwd=ROOT).returncode


def gather_wheels(folders: list[Path], joined: Path) -> list[Path]:
    """Every wheel under `folders`; parts (`X.whl.part-00`, `-01`, ...) are joined into
    `joined`. Raises SystemExit when a wheel's sha256 differs from a SHA256SUMS line."""
    files = [f for folder in folders if folder.is_dir() for f in sorted(folder.rglob("*"))]
    sums: dict[str, str] = {}
    for f in files:
        if f.name == "SHA256SUMS":
            for line in f.read_text().splitlines():
                if line.strip():
                    digest, name = line.split()
                    sums[name.lstrip("*")] = digest
    wheels = {f.name: f for f in files if f.suffix == ".whl"}
    parts: dict[str, list[Path]] = {}
    for f in files:
        m = re.fullmatch(r"(.+\.whl)\.part-(\d+)", f.name)
        if m:
            parts.setdefault(m.group(1), []).append(f)
    for name, pieces in parts.items():
        joined.mkdir(parents=True, exist_ok=True)
        with open(joined / name, "wb") as out:
            for piece in sorted({p.name: p for p in pieces}.values(), key=lambda p: p.name):
                out.write(piece.read_bytes())
        wheels[name] = joined / name
    missing = sorted(set(sums) - set(wheels))
    if missing:
        raise SystemExit(f"wheels listed in SHA256SUMS but not found: {', '.join(missing)}")
    for name, path in wheels.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if name in sums and sums[name] != digest:
            raise SystemExit(f"{name}: sha256 {digest} differs from SHA256SUMS; a part is missing")
    return sorted(wheels.values())


# --- 2. the environment and the gpu-marked tests -------------------------------------------


def environment() -> dict[str, Any]:
    """Python, torch and its GPU, onnxruntime and its providers, and edgec's CUDA probe."""
    env: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch  # first: its CUDA and cuDNN libraries are what onnxruntime then finds

        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception as e:
        env["torch"] = f"unavailable: {_first_line(e)}"
    import onnxruntime as ort

    from targets.cuda import probe_cuda

    env["onnxruntime"] = f"{ort.__version__} from {Path(ort.__file__).parent}"
    env["providers"] = ort.get_available_providers()
    env["cuda_probe"] = probe_cuda() or "CUDA provider starts"
    return env


def run_gpu_tests(deadline: float) -> dict[str, Any]:
    """`pytest -m gpu` on the CUDA target's tests; passed means none failed or skipped."""
    t0 = time.monotonic()
    # torch first, as in this process: its CUDA and cuDNN libraries serve onnxruntime too
    run = "import sys, torch, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", run, "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider"]
    cmd.append("tests/targets/test_cuda.py")
    timeout = max(30.0, min(180.0, deadline - time.monotonic() - 240))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "summary": f"timed out after {timeout:.0f} s", "output": ""}
    output = (proc.stdout + proc.stderr).strip()
    summary = output.splitlines()[-1] if output else f"exit {proc.returncode}"
    passed = proc.returncode == 0 and "skipped" not in summary and "passed" in summary
    return {
        "passed": passed,
        "summary": summary,
        "seconds": round(time.monotonic() - t0, 1),
        "output": output[-3000:],
    }


# --- 3. the models -----------------------------------------------------------------------


def fp16_converter() -> tuple[Callable[[Any, Any], tuple[Any, dict[str, Any]]] | None, str]:
    """The FP16 pass as `(proto, calibration batches) → (proto, summary)`, or None and why.

    The pass is `passes.precision.Fp16Pass(calibration, Fp16Options())` with its
    defaults (float16 inputs and outputs; the runner casts float32 feeds).
    """
    if importlib.util.find_spec("passes.precision") is None:
        return None, "skipped: passes.precision does not exist (the FP16 pass is not here yet)"
    try:
        from passes.precision import Fp16Options, Fp16Pass, Fp16PassResult
    except ImportError as e:
        return None, f"skipped: passes.precision has no Fp16Pass/Fp16Options ({_first_line(e)})"
    import onnx_ir as ir

    def run(proto: Any, calibration: Any) -> tuple[Any, dict[str, Any]]:
        result = Fp16Pass(calibration, Fp16Options())(ir.from_proto(proto))
        assert isinstance(result, Fp16PassResult)
        summary = result.summary
        return ir.to_proto(result.model), {
            "converted": summary.converted,
            "kept_float32": summary.kept_by_reason(),
            "casts": summary.casts_inserted,
            "seconds": round(summary.seconds, 1),
            "note": summary.note,
        }

    return run, "passes.precision.Fp16Pass with its default Fp16Options"


@dataclass
class Source:
    """One model to compare: its FP32 ONNX, evaluation inputs and labels."""

    proto: Any
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    eval_batch: int
    calibration: list[dict[str, np.ndarray]]  # the FP16 pass's data, disjoint from `inputs`


def load_source(name: str, args: argparse.Namespace) -> Source:
    if name == "bert":
        return bert_source(args.bert_layers, args.seq, min(args.eval_samples, 32))
    from compiler.sources import resolve

    source = resolve(name)
    spec = source.zoo_spec
    assert spec is not None
    inputs, labels = spec.evaluation_data(args.eval_samples)
    name = spec.inputs[0].name
    calibration = [{name: spec.calibration_data(32)}]
    return Source(source.proto, {name: inputs}, labels, 16, calibration)


def bert_source(layers: int, seq: int, samples: int) -> Source:
    """BertForSequenceClassification (BERT-base sizes, `layers` layers, 16 labels), random
    init (seed 0), exported with edgec's exporter; random token ids, no padding."""
    import torch
    import transformers

    from compiler.export import export_torch

    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=layers)
    config.num_labels = 16
    config._attn_implementation = "eager"  # traceable by the TorchScript exporter
    model = transformers.BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (samples + 32, seq)).astype(np.int64)
    mask = np.ones((samples + 32, seq), np.int64)
    proto = export_torch(Logits(), [ids[:1], mask[:1]], input_names=["input_ids", "attention_mask"])
    inputs = {"input_ids": ids[:samples], "attention_mask": mask[:samples]}
    calibration = [{"input_ids": ids[samples:], "attention_mask": mask[samples:]}]
    return Source(proto, inputs, None, 8, calibration)


def compare_model(
    name: str,
    fp16: Callable[[Any, Any], tuple[Any, dict[str, Any]]] | None,
    args: argparse.Namespace,
    deadline: float,
) -> dict[str, Any]:
    """Accuracy and paired latency of one model's FP32 and FP16 on the CUDA provider."""
    import onnx_ir as ir

    from targets.cuda import CudaTarget

    t0 = time.monotonic()
    source = load_source(name, args)
    protos = {"fp32": source.proto}
    result: dict[str, Any] = {"inputs": {k: list(v.shape) for k, v in source.inputs.items()}}
    if fp16 is not None:
        try:
            protos["fp16"], result["fp16_pass"] = fp16(source.proto, source.calibration)
        except Exception as e:
            result["fp16_error"] = f"{type(e).__name__}: {_first_line(e)}"
    with tempfile.TemporaryDirectory(prefix=f"edgec-{name}-") as tmp, contextlib.ExitStack() as st:
        paths = {
            k: CudaTarget().lower(ir.from_proto(p), Path(tmp), stem=f"{name}_{k}").path
            for k, p in protos.items()
        }
        on_cpu = args.dry_run_on_cpu is not None
        runners = {k: st.enter_context(_cuda_runner(p, on_cpu)) for k, p in paths.items()}
        result["accuracy"] = accuracy(paths["fp32"], runners, source, tf32=not on_cpu)
        result["placement"] = {k: _placement(*pair) for k, pair in runners.items()}
        left = deadline - time.monotonic()
        seconds = max(5.0, min(15.0, left / (2 * len(args.batches) + 1)))
        result["latency"] = {
            str(b): latency(runners, source, b, seconds, not (args.no_cuda_graph or on_cpu))
            for b in args.batches
        }
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


@contextlib.contextmanager
def _cuda_runner(path: Path, on_cpu: bool = False) -> Iterator[tuple[Any, str | None]]:
    """An active CudaRunner and edgec's refusal, if any: a model refused for CPU fallback
    is recorded and run anyway (`check_placement=False`), to measure what it does.
    `on_cpu`: the same runner on the CPU provider (the rehearsal)."""
    from compiler.ground.errors import InvalidInput
    from targets.cuda import CudaRunner

    where: dict[str, Any] = {"providers": CPU, "device": "cpu"} if on_cpu else {}
    runner = CudaRunner(path, **where)
    refusal = None
    try:
        runner.activate()
    except InvalidInput as e:
        if "would run on the CPU" not in str(e):
            raise
        refusal = str(e)
        runner = CudaRunner(path, check_placement=False, **where)
        runner.activate()
    try:
        yield runner, refusal
    finally:
        runner.deactivate()


def _placement(runner: Any, refusal: str | None) -> dict[str, Any]:
    wanted = runner.providers[0]
    off = [f"{p.op_type} {p.name}" for p in runner.placements if p.provider != wanted]
    return {
        "nodes": len(runner.placements),
        "off_cuda": len(off),
        "off_cuda_first": off[:8],
        "refused": refusal,
    }


def accuracy(
    fp32: Path, runners: Mapping[str, tuple[Any, str | None]], source: Source, *, tf32: bool
) -> dict[str, Any]:
    """FP32 on CUDA and TF32 on CUDA against FP32 on the CPU; FP16 against FP32 on CUDA."""
    from compiler.evaluate import compare_outputs, run_batched
    from targets.cpu import OrtRunner
    from targets.cuda import cuda_provider_options

    def outputs(runner: Any) -> np.ndarray:
        return run_batched(runner, source.inputs, source.eval_batch)[0]

    with OrtRunner(fp32, providers=CPU) as r:
        cpu = outputs(r)
    cuda = {key: outputs(runner) for key, (runner, _) in runners.items()}
    acc = {"fp32_cuda_vs_cpu": compare_outputs(cpu, cuda["fp32"], source.labels).to_dict()}
    if tf32:
        options = {**cuda_provider_options(), "use_tf32": "1"}  # onnxruntime's default
        with OrtRunner(fp32, providers=(CUDA,), provider_options=[options]) as r:
            acc["tf32_cuda_vs_cpu"] = compare_outputs(cpu, outputs(r), source.labels).to_dict()
    if "fp16" in cuda:
        fp16 = compare_outputs(cuda["fp32"], cuda["fp16"], source.labels)
        acc["fp16_vs_fp32_cuda"] = fp16.to_dict()
    return acc


def latency(
    runners: Mapping[str, tuple[Any, str | None]],
    source: Source,
    batch: int,
    seconds: float,
    graphs: bool,
) -> dict[str, Any]:
    """FP32 and FP16 (IO binding), FP32 with host copies, and CUDA graphs, in alternating
    rounds; ratios are paired with FP32 round by round (`latency_ratio`)."""
    from targets.latency import latency_ratio, measure_interleaved, timed_call

    feeds = {
        k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:])))
        for k, v in source.inputs.items()
    }
    calls: dict[str, Callable[[], object]] = {}
    modes: dict[str, str] = {}
    for key, (runner, _) in runners.items():
        calls[key] = timed_call(runner, feeds)
        if key == "fp32":
            calls["fp32_host_copies"] = functools.partial(runner.infer, feeds)
        if graphs:
            graph = runner.bound_call(feeds, cuda_graph=True)
            calls[f"{key}_cuda_graph"] = graph
            modes[f"{key}_cuda_graph"] = graph.mode
    stats = measure_interleaved(
        calls, batch=batch, warmup=20, round_size=20, max_rounds=40, max_seconds=seconds
    )
    out: dict[str, Any] = {k: s.to_dict() for k, s in stats.items()}
    out["ratio_to_fp32"] = {
        k: round(latency_ratio(s, stats["fp32"]), 4) for k, s in stats.items() if k != "fp32"
    }
    out["timing_modes"] = modes
    return out


# --- 4. the results ----------------------------------------------------------------------


def write_results(results: dict[str, Any], folder: Path | None, copy_to: Path | None) -> None:
    """The markdown and JSON to docs/ and bench/results/ (or both into `folder`)."""
    md = RESULTS_MD if folder is None else folder / RESULTS_MD.name
    js = RESULTS_JSON if folder is None else folder / RESULTS_JSON.name
    for path, text in (
        (js, json.dumps(results, indent=2, default=str) + "\n"),
        (md, markdown(results)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _say(f"wrote {md} and {js}")
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        for f in (md, js):
            shutil.copy(f, copy_to / f.name)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    env, tests = results["environment"], results["gpu_tests"]
    lines = [
        "# GPU check: onnxruntime's CUDA provider",
        "",
        f"Written by `bench/gpu_check.py` ({time.strftime('%Y-%m-%d')}, {results['seconds']} s).",
        "",
        *([f"**Rehearsal {results['rehearsal']}.**", ""] if results.get("rehearsal") else []),
        f"- GPU: {env.get('gpu', 'none found')}; torch {env.get('torch')}; "
        f"onnxruntime {env.get('onnxruntime')}",
        f"- CUDA probe: {env.get('cuda_probe')}",
        f"- `pytest -m gpu tests/targets/test_cuda.py`: {tests['summary']}",
        f"- FP16: {results['fp16']}",
        "",
        "## Accuracy",
        "",
        "Max abs error and SQNR (dB) of each run against its reference; top-1 agreement for",
        "classifiers. TF32 is what onnxruntime's CUDA provider does by default; edgec turns it off.",
        "",
        "| model | FP32 CUDA vs CPU: max abs / SQNR | TF32 CUDA vs CPU: max abs / SQNR "
        "| FP16 vs FP32 CUDA: max abs / SQNR / top-1 | nodes off CUDA (fp32, fp16) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in results["models"].items():
        if "accuracy" not in m:
            lines.append(f"| {name} | {m.get('error') or m.get('skipped')} | | | |")
            continue
        a, pl = m["accuracy"], m["placement"]
        cells = []
        for key in ("fp32_cuda_vs_cpu", "tf32_cuda_vs_cpu", "fp16_vs_fp32_cuda"):
            r = a.get(key)
            extra = f" / {_fmt(r.get('top1_agreement'))}" if r and key.startswith("fp16") else ""
            cells.append(f"{_fmt(r['max_abs_error'])} / {_fmt(r['sqnr_db'])}{extra}" if r else "–")
        off = ", ".join(str(pl[k]["off_cuda"]) for k in pl)
        lines.append(f"| {name} | {' | '.join(cells)} | {off} |")
    lines += _latency_lines(results)
    lines += _notes(results)
    return "\n".join(lines) + "\n"


def _latency_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Latency",
        "",
        "p50 in ms, timed with IO binding (inputs on the GPU, outputs left there); ratios are",
        "medians of per-round ratios to FP32 measured in the same rounds (< 1: faster).",
        "",
        "| model | batch | FP32 p50 | FP16 p50 | FP16/FP32 | FP32 host copies/FP32 "
        "| FP32 CUDA graph/FP32 | FP16 CUDA graph/FP32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in results["models"].items():
        for batch, lat in m.get("latency", {}).items():
            r = lat["ratio_to_fp32"]
            row = [
                name,
                batch,
                _fmt(lat["fp32"]["p50"]),
                _fmt(lat.get("fp16", {}).get("p50")),
                _fmt(r.get("fp16")),
                _fmt(r.get("fp32_host_copies")),
                _fmt(r.get("fp32_cuda_graph")),
                _fmt(r.get("fp16_cuda_graph")),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Notes", ""]
    for name, m in results["models"].items():
        for key, pl in m.get("placement", {}).items():
            if pl.get("refused"):
                lines.append(f"- {name} {key}: refused by edgec, measured anyway: {pl['refused']}")
        if m.get("fp16_error"):
            lines.append(f"- {name}: FP16 conversion failed: {m['fp16_error']}")
        for batch, lat in m.get("latency", {}).items():
            for k, mode in lat.get("timing_modes", {}).items():
                if mode != "cuda_graph":
                    lines.append(f"- {name} batch {batch}: {k} fell back to {mode}")
    if not results["gpu_tests"]["passed"]:
        lines += ["", "gpu tests output:", "", "```", results["gpu_tests"]["output"], "```"]
    lines += ["", "Raw numbers: `bench/results/gpu_check.json`.", "", HOW_TO_RUN]
    return lines


if __name__ == "__main__":
    sys.exit(main())
