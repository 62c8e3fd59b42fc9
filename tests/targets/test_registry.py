"""The target table: every target carries what the pipeline asks of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.ground.errors import UsageError
from passes.quantize.spec import CPU_SPEC, TENSORRT_SPEC, QuantSpec
from targets.registry import TARGETS, get_target, target_names
from tests.targets.conftest import TinyModel

ALL = ("fp32", "fp16", "int8", "auto")
# name → (quant_spec, channel_multiple, formats, precisions, auto_precisions);
# the first format is the default.
EXPECTED: dict[str, tuple[QuantSpec, int, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "cpu": (CPU_SPEC, 16, ("onnx", "ort"), ALL, ("fp32", "int8")),
    # onnxruntime's CUDA provider has no int8 kernels: int8 goes to --target tensorrt
    "cuda": (TENSORRT_SPEC, 8, ("onnx",), ("fp32", "fp16", "auto"), ("fp32", "fp16")),
    "tensorrt": (TENSORRT_SPEC, 8, ("engine",), ALL, ("fp32", "fp16", "int8")),
}


def test_names_are_the_table_sorted() -> None:
    assert target_names() == sorted(TARGETS) == ["cpu", "cuda", "tensorrt"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_target_declares_what_the_pipeline_asks(name: str) -> None:
    target = get_target(name)
    spec, multiple, formats, precisions, auto = EXPECTED[name]
    assert target.name == name
    assert target.quant_spec is spec
    assert target.channel_multiple == multiple
    assert target.precisions == precisions and target.auto_precisions == auto
    assert target.formats == formats
    for p in ALL:
        refusal = target.precision_refusal(p)
        assert (refusal is None) == (p in precisions), p
    assert "--target tensorrt" in (get_target("cuda").precision_refusal("int8") or "")
    reason = target.unavailable_reason()
    assert reason is None or (reason.strip() and "\n" not in reason)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lower_refuses_formats_it_does_not_list(
    name: str, tmp_path: Path, gemm_relu: TinyModel
) -> None:
    target = get_target(name)
    for fmt in ("onnx", "ort", "engine", "tflite"):
        if fmt not in target.formats:
            with pytest.raises(UsageError, match=f"target {name} "):
                target.lower(gemm_relu.ir(), tmp_path, stem="m", fmt=fmt)
    assert list(tmp_path.iterdir()) == []


def test_cpu_lowers_to_its_first_format_by_default(tmp_path: Path, gemm_relu: TinyModel) -> None:
    target = get_target("cpu")
    assert target.lower(gemm_relu.ir(), tmp_path, stem="m").format == target.formats[0]


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as e:
        get_target("tpu")
    assert e.value.args[0] == "unknown target 'tpu'; known: cpu, cuda, tensorrt"
