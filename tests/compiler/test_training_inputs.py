"""How much training data fine-tuning reads (`compiler.data.training_inputs`)."""

from __future__ import annotations

from compiler.config import CompileConfig
from compiler.data import training_inputs
from compiler.sources import resolve


def test_recovery_fine_tuning_reads_the_zoo_entrys_finetune_samples() -> None:
    source = resolve("digits_cnn")
    spec = source.zoo_spec
    assert spec is not None and spec.default_finetune_samples == 1024
    config = CompileConfig(model="digits_cnn")
    assert len(training_inputs(config, source, finetune=True)) == 1024
    assert len(training_inputs(config, source)) == spec.default_calib_samples  # QAT: 256
    # --calib-samples decides for both
    chosen = CompileConfig(model="digits_cnn", calib_samples=300)
    assert len(training_inputs(chosen, source, finetune=True)) == 300
    assert len(training_inputs(chosen, source)) == 300
