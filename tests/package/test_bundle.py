"""`edgec package RUN_DIR --device PROFILE`: the bundle's files, hashes, ORT model, runner."""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.package.conftest import run_cli

RUNNER_WRAPPER = """
import importlib.abc, runpy, sys
sys.path[:0] = {paths!r}
BLOCKED = ("compiler", "passes", "targets", "models", "onnx", "onnx_ir", "torch", "tests")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("run.py may not import " + name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_isolated(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -I -S` on `script` with only numpy's and onnxruntime's folders importable
    (no .pth files, so no editable edgec) and edgec, onnx and torch imports refused."""
    paths = sorted({str(Path(str(m.__file__)).parents[1]) for m in (np, ort)})
    code = RUNNER_WRAPPER.format(paths=paths, script=str(script), args=list(args))
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=script.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "avx2"
    code, text = run_cli("package", str(run_dir), "--device", "x86-avx2", "--out", str(out))
    assert code == 0, text
    assert f"bundle: {out}" in text
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_manifest_hashes_every_file_and_carries_the_report(bundle: Path, run_dir: Path) -> None:
    m = _manifest(bundle)
    report = json.loads((run_dir / "report.json").read_text())
    on_disk = {p.name for p in bundle.iterdir()} - {"manifest.json"}
    assert (
        set(m["files"])
        == on_disk
        == {
            "small_cnn.fp32.onnx",
            "small_cnn.fp32.ort",
            "required_operators.config",
            "run.py",
        }
    )
    for name, entry in m["files"].items():
        data = (bundle / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size_bytes"] == len(
            data
        )
    # the shipped ONNX is byte for byte the artifact the report measured
    assert m["files"]["small_cnn.fp32.onnx"]["sha256"] == report["artifact"]["sha256"]
    assert (m["format"], m["target"], m["precision"]) == ("edgec-bundle/1", "cpu", "fp32")
    assert m["device"]["name"] == "x86-avx2" and m["edgec_version"] == report["edgec_version"]
    assert m["runtime"] == {
        "name": "onnxruntime",
        "model": "small_cnn.fp32.ort",
        "providers": ["CPUExecutionProvider"],
        "onnxruntime_version": ort.__version__,
        "reduced_build": m["runtime"]["reduced_build"],
    }
    assert "--include_ops_by_config required_operators.config" in m["runtime"]["reduced_build"]
    assert m["inputs"] == [
        {"name": "input", "shape": [m["inputs"][0]["shape"][0], 3, 16, 16], "dtype": "float32"}
    ]
    assert isinstance(m["inputs"][0]["shape"][0], str)  # the dynamic batch stays symbolic
    assert [(o["shape"][1], o["dtype"]) for o in m["outputs"]] == [(10, "float32")]
    assert m["preprocessing"]["known"] is False  # an ONNX file: edgec cannot know
    figures = m["report"]
    assert figures["accuracy"]["cosine"] == report["accuracy"]["cosine"]
    assert figures["latency_ms"] == report["latency_ms"]
    assert figures["size_bytes"] == report["artifact"]["size_bytes"]
    assert figures["measured_on_target"] == "cpu" and m["tensorrt"] is None


def test_ort_format_model_computes_what_the_artifact_computes(bundle: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(bundle / "small_cnn.fp32.onnx")).run(None, {"input": x})[0]
    ort_model = bundle / "small_cnn.fp32.ort"
    assert ort_model.read_bytes()[4:8] == b"ORTM"  # the ORT flatbuffer's file identifier
    got = ort.InferenceSession(str(ort_model)).run(None, {"input": x})[0]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_required_operators_config_lists_the_model_s_kernels(bundle: Path) -> None:
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    config = bundle / "required_operators.config"
    text = config.read_text()
    assert "# - small_cnn.fp32.ort" in text and "/tmp" not in text  # no build paths
    required, types = parse_config(str(config))  # the parser onnxruntime's reduced build uses
    ops = {(domain, op) for domain, opsets in required.items() for s in opsets.values() for op in s}
    for op in ("GlobalAveragePool", "Flatten", "Gemm"):
        assert ("ai.onnx", op) in ops
    # Conv+ReLU is fused offline into onnxruntime's FusedConv kernel
    assert ("com.microsoft", "FusedConv") in ops or ("ai.onnx", "Conv") in ops
    assert types is None


def test_runner_needs_only_numpy_and_onnxruntime(bundle: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    done = run_isolated(
        bundle / "run.py", "--inputs", str(tmp_path / "x.npz"), "--save", str(tmp_path / "y.npz")
    )
    assert done.returncode == 0, done.stderr
    assert "output: float32 [2, 10]" in done.stdout and "argmax per row" in done.stdout
    want = ort.InferenceSession(str(bundle / "small_cnn.fp32.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["output"], want, rtol=1e-5, atol=1e-6)
    # random inputs of the manifest's shapes (dynamic batch → 1), and --check
    done = run_isolated(bundle / "run.py")
    assert done.returncode == 0 and "output: float32 [1, 10]" in done.stdout, done.stderr
    done = run_isolated(bundle / "run.py", "--check")
    assert done.returncode == 0 and done.stdout.strip() == "ok: 4 files match manifest.json"


@pytest.mark.parametrize("tamper", ["change", "remove"])
def test_runner_refuses_a_tampered_bundle(bundle: Path, tmp_path: Path, tamper: str) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    model = copy / "small_cnn.fp32.ort"
    if tamper == "change":
        data = bytearray(model.read_bytes())
        data[-1] ^= 1
        model.write_bytes(bytes(data))
    else:
        model.unlink()
    done = run_isolated(copy / "run.py")
    assert done.returncode == 4 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    why = "differs from manifest.json" if tamper == "change" else "is missing"
    assert done.stderr.startswith(f"run.py: error: small_cnn.fp32.ort {why}")


def test_tensorrt_profile_bundle_is_built_on_the_board(run_dir: Path, tmp_path: Path) -> None:
    from targets.profiles import get_profile
    from targets.tensorrt.settings import derive_settings
    from tests.targets.tensorrt.test_api_names import problems

    out = tmp_path / "nano"
    code, text = run_cli("package", str(run_dir), "--device", "jetson-orin-nano", "--out", str(out))
    assert code == 0, text
    assert "built on" not in text or "on the board" in text
    m = _manifest(out)
    assert (
        set(m["files"])
        == {p.name for p in out.iterdir()} - {"manifest.json"}
        == {
            "small_cnn.fp32.onnx",
            "builder_settings.json",
            "trtexec.txt",
            "build_engine.py",
            "run.py",
        }
    )
    trt = m["tensorrt"]
    assert m["target"] == "tensorrt" and trt["engine_built"] is False
    assert trt["legality"].startswith("passed edgec's TensorRT ONNX check")
    assert "on the board" in trt["build_on_board"] and not list(out.glob("*.engine"))
    # the settings are what --target tensorrt derives for the board (fp32: no TF32, no DLA)
    import onnx

    proto = onnx.load(str(out / "small_cnn.fp32.onnx"))
    expected = derive_settings(
        proto,
        precision="fp32",
        batch=1,
        max_batch=16,
        device_profile=get_profile("jetson-orin-nano"),
    ).to_dict()
    settings = json.loads((out / "builder_settings.json").read_text())
    assert settings == json.loads(json.dumps(expected))
    assert (settings["workspace_bytes"], settings["tf32"], settings["dla_core"]) == (
        1 << 30,
        False,
        None,
    )
    line = (out / "trtexec.txt").read_text().strip()
    assert line == trt["trtexec"]
    assert line.split() == [
        "trtexec",
        "--onnx=small_cnn.fp32.onnx",
        "--saveEngine=small_cnn.fp32.engine",
        "--stronglyTyped",
        "--memPoolSize=workspace:1024",
        "--profilingVerbosity=detailed",
        "--skipInference",
        "--noTF32",
        "--minShapes=input:1x3x16x16",
        "--optShapes=input:1x3x16x16",
        "--maxShapes=input:16x3x16x16",
        "--timingCacheFile=small_cnn.fp32.timing.cache",
    ]
    script = out / "build_engine.py"
    py_compile.compile(str(script), cfile=str(tmp_path / "build_engine.pyc"), doraise=True)
    source = script.read_text()
    assert problems(source, "build_engine.py") == []  # only documented TensorRT 10/11 names
    assert "STRONGLY_TYPED" in source and "BuilderFlag.FP16" not in source
    # without TensorRT here, the script says so (exit 5) after checking the hashes
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 5 and "TensorRT's Python bindings are not importable" in done.stderr


def test_repackaging_replaces_the_bundle(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pi"
    for _ in range(2):
        code, text = run_cli(
            "package", str(run_dir), "--device", "raspberry-pi-5", "--out", str(out)
        )
        assert code == 0, text
    assert _manifest(out)["device"]["arch"] == "aarch64"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pi"]  # no staging or old copy left


def _one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error: "), text
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--device", "jetson-tx2"], 2, "unknown device 'jetson-tx2'"),
        (["--device", "jetson-xavier-nx", "--target", "tensorrt"], 2, "ships TensorRT 8.5"),
        (["--device", "raspberry-pi-5", "--target", "cuda"], 2, "no CUDA GPU"),
    ],
)
def test_bad_device_exits_2_and_writes_nothing(
    run_dir: Path, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    out = tmp_path / "b"
    got, text = run_cli("package", str(run_dir), *args, "--out", str(out))
    assert got == code and says in _one_line_error(text)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_run_dir_exits_2_or_4_and_writes_nothing(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    code, text = run_cli(
        "package", str(tmp_path / "nope"), "--device", "x86-avx2", "--out", str(out)
    )
    assert code == 2 and "is not a folder" in _one_line_error(text)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = run_cli("package", str(empty), "--device", "x86-avx2", "--out", str(out))
    assert code == 2 and "holds no report.json" in _one_line_error(text)
    changed = tmp_path / "changed"
    shutil.copytree(run_dir, changed)
    artifact = changed / "small_cnn.fp32.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    code, text = run_cli("package", str(changed), "--device", "x86-avx2", "--out", str(out))
    assert code == 4 and "sha256 mismatch" in _one_line_error(text)
    (changed / "report.json").write_text("{not json")
    code, text = run_cli("package", str(changed), "--device", "x86-avx2", "--out", str(out))
    assert code == 4 and "not a readable JSON report" in _one_line_error(text)
    code, text = run_cli("package", str(run_dir), "--device", "x86-avx2", "--out", str(run_dir))
    assert code == 2 and "would replace the run itself" in _one_line_error(text)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["changed", "empty"]
    assert not list(run_dir.glob("bundle-*"))


def test_preprocessing_says_what_edgec_knows() -> None:
    from compiler.package.manifest import preprocessing

    image = preprocessing({"model": {"name": "mobilenet_v2", "source": "zoo"}})
    assert image["known"] is True and image["function"] == "models.imagenet.preprocess_image"
    assert image["description"].startswith("torchvision's ImageNet eval transform")
    digits = preprocessing({"model": {"name": "digits_cnn", "source": "zoo"}})
    assert digits["known"] is False and "no preprocessing function" in digits["description"]
    file = preprocessing({"model": {"name": "net", "source": "onnx"}})
    assert file["known"] is False and "as onnx, not from its zoo" in file["description"]


def test_a_model_tensorrt_cannot_parse_gets_no_jetson_bundle(tmp_path: Path) -> None:
    """The bundle's ONNX must pass edgec's TensorRT check: a contrib op fails it (exit 4)."""
    from tests.compiler.test_custom_domains import contrib_model

    src = tmp_path / "contrib.onnx"
    src.write_bytes(contrib_model().SerializeToString())
    run = tmp_path / "run"
    code, text = run_cli("compile", str(src), "--out", str(run), "--report", "json")
    assert code == 0, text
    out = tmp_path / "nano"
    code, text = run_cli("package", str(run), "--device", "jetson-orin-nano", "--out", str(out))
    assert code == 4, text
    assert "would not build on jetson-orin-nano" in text and "Gelu" in text
    assert not out.exists()
