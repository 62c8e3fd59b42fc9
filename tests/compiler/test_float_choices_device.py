"""--auto-fallback times the float stem and skip path only where this machine is the board."""

from __future__ import annotations

import logging

import pytest

from compiler import machine
from compiler.config import Budgets, CompileConfig
from compiler.sources import resolve
from compiler.stages import quantize as quantize_stage

VNNI_HOST = ("x86_64", False)
AVX2_HOST = ("x86_64", True)


def _float_choices(
    monkeypatch: pytest.MonkeyPatch,
    host: tuple[str, bool],
    device: str | None,
    *,
    fallback: bool = True,
    target: str = "cpu",
) -> str:
    monkeypatch.setattr(machine, "host_cpu", lambda: host)
    config = CompileConfig(
        model="digits_cnn",
        precision="int8",
        target=target,
        device=device,
        auto_fallback=fallback,
        budgets=Budgets(min_accuracy=0.9),
    )
    options = quantize_stage.ptq_options(config, resolve("digits_cnn"), threads=1)
    return options.float_choices


@pytest.mark.parametrize(
    "host,device,expected",
    [
        (VNNI_HOST, None, "measured"),  # no --device: this machine is the board
        (VNNI_HOST, "x86-avx512-vnni", "measured"),
        (AVX2_HOST, "x86-avx2", "measured"),
        (VNNI_HOST, "x86-avx2", "spec"),  # another int8 kernel
        (AVX2_HOST, "x86-avx512-vnni", "spec"),
        (VNNI_HOST, "jetson-orin-nano", "spec"),  # another architecture
        (VNNI_HOST, "raspberry-pi-5", "spec"),
    ],
)
def test_float_choices_are_timed_only_on_a_machine_like_the_board(
    monkeypatch: pytest.MonkeyPatch, host: tuple[str, bool], device: str | None, expected: str
) -> None:
    assert _float_choices(monkeypatch, host, device) == expected


def test_the_spec_rules_stand_with_a_warning_off_the_board(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert _float_choices(monkeypatch, VNNI_HOST, "jetson-orin-nano") == "spec"
    assert "cannot time a jetson-orin-nano (aarch64)" in caplog.text


def test_nothing_is_timed_without_auto_fallback_or_off_the_cpu_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _float_choices(monkeypatch, VNNI_HOST, None, fallback=False) == "spec"
    assert _float_choices(monkeypatch, VNNI_HOST, None, target="tensorrt") == "spec"
