"""The pipeline entry: plain arguments in, (QDQ model, report section) out, fixable errors → exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.registry import get_model
from passes.errors import PassOptionError
from passes.qat import run_qat_stage
from passes.quantize.qdq import count_qdq
from tests.passes.qat.qat_models import DataDependent


def test_run_qat_stage_on_digits(tmp_path) -> None:
    zs = get_model("digits_cnn")
    x_eval, y_eval = zs.evaluation_data(128)
    bars: list[tuple[str, int, int]] = []
    seen = []
    model, section = run_qat_stage(
        zs.build(), "cpu", train_inputs=zs.calibration_data(96), train_labels=None,
        eval_inputs=x_eval, eval_labels=y_eval, epochs=2, batch_size=32, checkpoint_dir=tmp_path,
        output_names=["logits"], threads=1, progress=lambda *a: bars.append(a), status=seen.append,
    )  # fmt: skip
    assert bars[-1] == ("qat", 6, 6) and [b[1] for b in bars] == list(range(1, 7))
    assert len(seen) == 6 and seen[-1].epoch == 2
    json.dumps(section)  # JSON-safe for the report
    assert section["metric"] == "top1_accuracy" and section["labels"] is False
    assert section["accuracy_exported"] >= section["accuracy_fp32"] - 0.01
    assert count_qdq(model)["QuantizeLinear"]["nodes"] > 0
    assert (tmp_path / "qat_checkpoint.pt").exists()


def test_fixable_problems_are_usage_errors(tmp_path) -> None:
    x = np.zeros((4, 1, 4, 4), np.float32)
    kw = dict(train_inputs=x, train_labels=None, eval_inputs=x, eval_labels=None, epochs=1)
    with pytest.raises(PassOptionError, match="torch.fx"):
        run_qat_stage(DataDependent(), "cpu", **kw)
    with pytest.raises(PassOptionError, match="no quantization spec"):
        run_qat_stage(DataDependent(), "nope", **kw)
    with pytest.raises(PassOptionError, match="--resume"):
        run_qat_stage(DataDependent(), "cpu", resume=True, **kw)
