"""QAT takes PTQ's own options object: each PTQ option is honoured, or refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from passes.errors import PassOptionError
from passes.qat import QatOptions, qat, refused_ptq_options, run_qat_stage
from passes.quantize import CPU_SPEC, PtqOptions
from tests.passes.qat.qat_models import tiny_mobile


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, (n, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize(
    "ptq,name",
    [
        (PtqOptions(min_agreement=0.9), "min_agreement"),
        (PtqOptions(min_sqnr_db=20.0, max_float_layers=1), "min_sqnr_db"),
        (PtqOptions(exclude=("Conv_3",)), "exclude"),
        (PtqOptions(sensitivity=True), "sensitivity"),
    ],
)
def test_options_qat_cannot_follow_are_refused_by_name(ptq: PtqOptions, name: str) -> None:
    assert name in refused_ptq_options(ptq)
    with pytest.raises(PassOptionError, match=f"QAT cannot honour the PTQ option {name}"):
        QatOptions(ptq=ptq)


def test_calibrate_init_takes_ranges_only() -> None:
    ok = PtqOptions(method="minmax", percentile=99.9, samples=64, float_stem=False, threads=1)
    assert refused_ptq_options(ok, "calibrate") == {}
    QatOptions(init="calibrate", ptq=ok)
    with pytest.raises(PassOptionError, match="option equalize: init='calibrate'"):
        QatOptions(init="calibrate", ptq=PtqOptions(equalize=False))
    # the full PTQ initialisation follows every step option
    assert refused_ptq_options(PtqOptions(equalize=False, rounding="nearest"), "ptq") == {}


def test_ptq_initialisation_runs_with_the_given_options() -> None:
    """The method, the sample count and the steps reach PTQ's run (its summary says so)."""
    x = _x(48)
    ptq = PtqOptions(method="minmax", samples=32, range_search=False, rounding="nearest")
    r = qat(tiny_mobile(), CPU_SPEC, train_inputs=x, eval_inputs=x[:16], epochs=0, lr=1e-3,
            batch_size=16, options=QatOptions(threads=1, ptq=ptq))  # fmt: skip
    assert r.ptq is not None
    assert r.ptq["method"] == "minmax" and r.ptq["samples"] == 32
    assert r.ptq["options"]["rounding"] == "nearest" and r.ptq["rounded_layers"] == 0
    assert "range_search" not in r.ptq["seconds"]


def test_float_stem_choice_reaches_the_qat_placement() -> None:
    x = _x(32)
    kw = dict(train_inputs=x, eval_inputs=x[:16], epochs=0, lr=1e-3, batch_size=16)
    stem = qat(tiny_mobile(), CPU_SPEC, options=QatOptions(threads=1), **kw)
    whole = qat(tiny_mobile(), CPU_SPEC, options=QatOptions(threads=1, ptq=PtqOptions(float_stem=False)), **kw)  # fmt: skip
    assert stem.ptq is not None and whole.ptq is not None
    assert stem.ptq["kept_float"] and not whole.ptq["kept_float"]
    assert whole.ptq["qdq_counts"]["Conv"]["input"] > stem.ptq["qdq_counts"]["Conv"]["input"]


def test_run_qat_stage_refuses_with_the_flag_name() -> None:
    x = _x(8)
    with pytest.raises(
        PassOptionError, match="--qat: QAT cannot honour the PTQ option min_agreement"
    ):
        run_qat_stage(tiny_mobile(), "cpu", train_inputs=x, train_labels=None, eval_inputs=x,
                      eval_labels=None, epochs=1, ptq=PtqOptions(min_agreement=0.9))  # fmt: skip
