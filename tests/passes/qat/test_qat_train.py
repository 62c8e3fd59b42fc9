"""QAT training on digits_cnn: the accuracy bound, distillation, BN warm-up, checkpoint/resume."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from models.digits import digits_split
from models.registry import get_model
from passes.qat.train import CHECKPOINT_NAME, QatOptions, qat
from passes.quantize.options import PtqOptions
from passes.quantize.spec import CPU_SPEC, TENSORRT_SPEC

OPTS = QatOptions(output_names=("logits",), threads=1)


@pytest.fixture(scope="module")
def digits():
    zs = get_model("digits_cnn")
    split = digits_split()
    x_eval, y_eval = zs.evaluation_data(len(split.test_y))
    return zs.build().eval(), split.train_x.reshape(-1, 1, 8, 8), split.train_y, x_eval, y_eval


@pytest.mark.parametrize("spec", [CPU_SPEC, TENSORRT_SPEC], ids=lambda s: s.name)
def test_digits_cnn_int8_accuracy_within_0_2_point_of_fp32(digits, spec) -> None:
    module, x, y, x_eval, y_eval = digits
    r = qat(module, spec, train_inputs=x, train_labels=y, eval_inputs=x_eval, eval_labels=y_eval,
            epochs=3, lr=1e-3, batch_size=32, options=OPTS)  # fmt: skip
    assert r.metric == "top1_accuracy" and len(y_eval) == 539
    # digits_cnn is trained on the machine at first use: 0.9907 on AVX-512, 0.9870 on AVX2
    assert r.accuracy_fp32 >= 0.985
    assert r.accuracy_exported >= r.accuracy_fp32 - 0.002  # measured on the ONNX artifact
    assert r.accuracy_after >= r.accuracy_fp32 - 0.002
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert all(n.op_type != "BatchNormalization" for n in r.model.graph)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_distillation_without_labels(digits, loss: str) -> None:
    module, x, _, x_eval, _ = digits
    seen = []
    opts = QatOptions(output_names=("logits",), threads=1, distill_loss=loss)
    r = qat(module, CPU_SPEC, train_inputs=x[:256], eval_inputs=x_eval, epochs=1, lr=1e-3,
            batch_size=32, progress=seen.append, options=opts)  # fmt: skip
    assert r.metric == "top1_agreement" and r.accuracy_fp32 == 1.0
    assert r.accuracy_after >= 0.98
    assert [p.step for p in seen] == list(range(1, 9)) and seen[-1].steps == 8
    assert all(np.isfinite(p.loss) and 0 <= p.agreement <= 1 for p in seen)


def test_bn_warmup_then_frozen(digits) -> None:
    module, x, y, x_eval, y_eval = digits
    r = qat(module, CPU_SPEC, train_inputs=x, train_labels=y, eval_inputs=x_eval, eval_labels=y_eval,
            epochs=2, lr=1e-3, batch_size=32, options=QatOptions(output_names=("logits",), threads=1,
            bn_warmup_epochs=1, init="calibrate"))  # fmt: skip
    assert r.accuracy_exported >= r.accuracy_fp32 - 0.01
    bns = [m for m in r.module.modules() if hasattr(m, "bn_frozen")]
    assert bns and all(bool(m.bn_frozen) for m in bns)


class _Interrupt(Exception):
    pass


def test_resume_gives_the_uninterrupted_result(digits, tmp_path) -> None:
    module, x, y, x_eval, y_eval = digits
    kw = dict(train_inputs=x[:320], train_labels=y[:320], eval_inputs=x_eval[:128],
              eval_labels=y_eval[:128], epochs=3, lr=1e-3, batch_size=32, options=OPTS)  # fmt: skip
    full = qat(module, CPU_SPEC, **kw)

    def stop_in_epoch_3(p) -> None:
        if p.epoch == 3 and p.step == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        qat(module, CPU_SPEC, checkpoint_dir=tmp_path, progress=stop_in_epoch_3, **kw)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary left behind
    resumed = qat(module, CPU_SPEC, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.resumed_from_epoch == 2
    a, b = full.module.state_dict(), resumed.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    assert (
        ir.to_proto(resumed.model).SerializeToString()
        == ir.to_proto(full.model).SerializeToString()
    )
    # a finished run resumes to the same result without training
    again = qat(module, CPU_SPEC, checkpoint_dir=tmp_path, resume=True, **kw)
    assert again.resumed_from_epoch == 3 and again.history == full.history


def test_resume_refuses_a_foreign_checkpoint(digits, tmp_path) -> None:
    module, x, y, x_eval, y_eval = digits
    kw = dict(train_inputs=x[:64], train_labels=y[:64], eval_inputs=x_eval[:32],
              eval_labels=y_eval[:32], batch_size=32, checkpoint_dir=tmp_path, options=OPTS)  # fmt: skip
    qat(module, CPU_SPEC, epochs=1, lr=1e-3, **kw)
    with pytest.raises(ValueError, match="different run"):
        qat(module, CPU_SPEC, epochs=1, lr=2e-3, resume=True, **kw)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it"):
        qat(module, CPU_SPEC, epochs=1, lr=1e-3, resume=True, **kw)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"epochs": -1}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"train_labels": np.zeros(3, np.int64)}, "train_labels"),
        ({"eval_inputs": np.full((2, 1, 8, 8), np.nan, np.float32)}, "NaN"),
        ({"resume": True}, "checkpoint_dir"),
        ({"options": QatOptions(distill=False)}, "train_labels"),
    ],
)
def test_bad_arguments(digits, kw, match) -> None:
    module, x, _, x_eval, _ = digits
    args = dict(train_inputs=x[:8], eval_inputs=x_eval[:8], epochs=1, lr=1e-3, batch_size=4)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        qat(module, CPU_SPEC, **args)


def test_resume_redoes_ptqs_structural_changes(tmp_path) -> None:
    """PTQ's equalization moves ReLU6 bounds (torch: Hardtanh); a resumed run rebuilds them."""
    from tests.passes.qat.qat_models import tiny_mobile

    x = np.random.default_rng(0).normal(0, 1, (96, 3, 8, 8)).astype(np.float32)
    kw = dict(train_inputs=x[:64], eval_inputs=x[64:], epochs=2, lr=1e-3, batch_size=16,
              options=QatOptions(threads=1, ptq=PtqOptions(samples=64)))  # fmt: skip
    full = qat(tiny_mobile(), CPU_SPEC, **kw)

    def stop(p) -> None:
        if p.epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        qat(tiny_mobile(), CPU_SPEC, checkpoint_dir=tmp_path, progress=stop, **kw)
    resumed = qat(tiny_mobile(), CPU_SPEC, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.resumed_from_epoch == 1 and resumed.ptq is not None and full.ptq is not None
    assert resumed.ptq["equalized_pairs"] == full.ptq["equalized_pairs"] > 0
    assert any(isinstance(m, torch.nn.Hardtanh) for m in resumed.module.modules())
    assert (
        ir.to_proto(resumed.model).SerializeToString()
        == ir.to_proto(full.model).SerializeToString()
    )


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="distill_loss"):
        QatOptions(distill_loss="l1")
    with pytest.raises(ValueError, match="init"):
        QatOptions(init="random")
    with pytest.raises(ValueError, match="BN warm-up"):
        QatOptions(bn_warmup_epochs=1)
