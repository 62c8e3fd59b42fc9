"""Pruning through the CLI: the report carries what was pruned and what it cost."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from compiler.cli import main


def _compile(*args: str) -> tuple[int, str, dict | None]:
    res = CliRunner().invoke(main, ["compile", *args, "--threads", "1", "--report", "json"])
    out = Path(args[args.index("--out") + 1]) / "report.json"
    return res.exit_code, res.output, json.loads(out.read_text()) if out.exists() else None


def test_digits_cnn_channel_pruning_with_finetune_keeps_accuracy(tmp_path: Path) -> None:
    code, text, report = _compile(
        "digits_cnn", "--prune", "0.5", "--prune-mode", "channel", "--finetune-epochs", "15",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, text
    p = report["pruning"]
    assert p["mode"] == "channel" and p["channels_after"] < p["channels_before"]
    ft = p["finetune"]
    assert ft["accuracy_pruned"] < ft["accuracy_unpruned"]  # pruning really cut something
    acc = report["accuracy"]
    # issue 5: within 1 point of the unpruned model's label accuracy on the held-out split
    assert acc["top1_accuracy"] >= acc["baseline_top1_accuracy"] - 0.01
    assert report["artifact"]["size_bytes"] < report["baseline"]["size_bytes"]


def test_unstructured_pruning_reports_sparsity_and_gates_compressed_size(
    small_cnn_onnx: Path, tmp_path: Path
) -> None:
    code, text, report = _compile(
        str(small_cnn_onnx), "--prune", "0.8", "--out", str(tmp_path / "o"), "--max-size-mb", "100"
    )
    assert code == 0, text
    p = report["pruning"]
    assert p["mode"] == "unstructured" and p["note"]
    assert report["gates"][0]["metric"] == "compressed artifact size (MB)"
    assert report["artifact"]["compressed_size_bytes"] < report["artifact"]["size_bytes"]


def test_prune_flag_errors_are_usage_errors(small_cnn_onnx: Path, tmp_path: Path) -> None:
    for args in (
        ["--prune", "1.5"],
        ["--prune-mode", "channel"],
        ["--prune", "0.3", "--finetune-epochs", "2"],
    ):
        res = CliRunner().invoke(
            main, ["compile", str(small_cnn_onnx), *args, "--out", str(tmp_path)]
        )
        assert res.exit_code == 2, (args, res.output)


def test_pruning_composes_with_int8(tmp_path: Path) -> None:
    code, text, report = _compile(
        "digits_cnn", "--prune", "0.3", "--prune-mode", "channel", "--precision", "int8",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, text
    assert report["pruning"]["channels_after"] < report["pruning"]["channels_before"]
    assert report["quantization"]["qdq_counts"]["Conv"]["weight"] >= 2
    # the baseline stays the unpruned FP32 model, measured in the same run
    assert report["baseline"]["size_bytes"] > 3 * report["artifact"]["size_bytes"]


def test_the_stage_maps_a_pass_option_error_to_a_usage_error(small_cnn_onnx: Path) -> None:
    import onnx
    import onnx_ir as ir
    import pytest

    from compiler.ground.errors import UsageError
    from compiler.stages.prune import prune_graph

    model = ir.from_proto(onnx.load(str(small_cnn_onnx)))
    records: list = []
    with pytest.raises(UsageError, match=r"channel pruning ratio must be in \[0, 1\)"):
        prune_graph(model, "channel", 1.5, round_to=1, records=records)
    with pytest.raises(UsageError, match="unknown pruning mode 'blocks'"):
        prune_graph(model, "blocks", 0.5, round_to=1, records=records)


def test_run_prune_takes_the_channel_multiple_from_the_caller(small_cnn_onnx: Path) -> None:
    import onnx_ir as ir

    from compiler.config import CompileConfig
    from compiler.data import EvalSet
    from compiler.sources import resolve
    from compiler.stages.optimize import optimize
    from compiler.stages.prune import run_prune
    from targets.registry import get_target

    source = resolve(str(small_cnn_onnx))
    fp32, records = optimize(ir.from_proto(source.proto))
    config = CompileConfig(model=str(small_cnn_onnx), prune_mode="channel", prune_ratio=0.5)
    unused = EvalSet(inputs={}, labels=None, source="unused without --finetune-epochs")

    def conv_channels(multiple: int) -> int:
        _, outcome = run_prune(config, source, unused, multiple, records, lambda *a: None, fp32)
        (conv,) = [g for g in outcome.to_dict()["groups"] if g["status"] != "refused"]
        return conv["channels_after"]

    # 8 channels: with cpu's multiple (16, more than the group) 4 are kept; a multiple of 8 keeps all
    assert conv_channels(get_target("cpu").channel_multiple) == 4
    assert conv_channels(8) == 8
    assert records[-1].name == "PruneChannelsPass"
