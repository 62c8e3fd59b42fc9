"""bench/quantize_compare.py's pure helpers (the bench itself runs in `make bench`, not here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import quantize_compare
from bench.quantize_compare import (
    INT8_FLAGS,
    accuracy,
    cpu_info,
    flip_margin,
    identical_groups,
    softmax_max,
    sqnr_db,
    top1_agreement,
)


def test_sqnr_is_signal_over_noise_power_in_db() -> None:
    ref = np.array([[3.0, 4.0]])  # power 25
    assert sqnr_db(ref, ref + np.array([[0.5, 0.0]])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(ref, ref) == math.inf


def test_softmax_max_is_stable_for_large_logits() -> None:
    p = softmax_max(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]], dtype=np.float32))
    np.testing.assert_allclose(p, [0.5, 0.75], rtol=1e-6)  # float32 log(3)


def test_top1_agreement_overall_masked_and_empty() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    out = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert top1_agreement(ref, out) == 0.5
    assert top1_agreement(ref, out, np.array([True, False, True, False])) == 1.0
    assert math.isnan(top1_agreement(ref, out, np.zeros(4, dtype=bool)))


def test_accuracy_counts_only_crops_fp32_is_confident_about() -> None:
    # rows 0 and 1: softmax max 0.88 (confident); rows 2 and 3: 3-way near-ties (< 0.5)
    ref = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    out = ref.copy()
    out[1] = [0.0, 0.0, 2.5]  # a confident crop flips
    out[2] = [0.0, 0.1, 0.0]  # an unconfident crop flips
    r = accuracy(ref, out)
    assert r["samples"] == 4
    assert r["confident_samples"] == 2
    assert r["top1_agreement"] == 0.5
    assert r["top1_agreement_confident"] == 0.5
    assert r["top1_agreement_stderr"] == pytest.approx(0.25)
    out[2] = ref[2]
    assert accuracy(ref, out)["top1_agreement_confident"] == 0.5
    assert accuracy(ref, out)["top1_agreement"] == 0.75


def test_cpu_info_reads_the_first_cpu_and_int8_flags() -> None:
    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Example\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: amx_int8\n"
    )
    info = cpu_info(text)
    assert info["model"] == "Intel(R) Xeon(R) Example"
    assert info["int8_flags"] == {f: f in ("avx2", "avx512f", "avx512_vnni") for f in INT8_FLAGS}
    assert cpu_info("") == {"model": None, "int8_flags": dict.fromkeys(INT8_FLAGS, False)}


def test_identical_groups_by_sha256() -> None:
    sha = {"a": "1", "b": "2", "c": "1", "d": "3", "e": "2"}
    assert identical_groups(sha) == [["a", "c"], ["b", "e"]]
    assert identical_groups({"a": "1"}) == []


def test_help_and_unknown_arguments_do_not_run_the_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--help` exits 0 and an unknown argument exits 2, both before any work (the bench
    used to run, and overwrite its results, whatever the arguments)."""
    ran: list[object] = []
    monkeypatch.setattr(quantize_compare, "run", lambda out: ran.append(out))
    for argv, code in ((["--help"], 0), (["--bogus"], 2)):
        with pytest.raises(SystemExit) as stop:
            quantize_compare.main(argv)
        assert stop.value.code == code
    assert ran == []
    quantize_compare.main(["--out", "x.json"])
    assert [str(p) for p in ran] == ["x.json"]


def test_the_step_ablation_ends_at_the_defaults() -> None:
    from passes.quantize import PtqOptions

    labels, options = zip(*quantize_compare.STEPS, strict=True)
    assert options[-1] == {} and "defaults" in labels[-1]
    for before, after in zip(options, options[1:], strict=False):  # each adds one step
        assert set(after) < set(before)
    for o in options:
        PtqOptions(**o)  # every row is a valid option set


def test_quantize_time_summary_judges_the_median_and_checks_the_files() -> None:
    from bench.quantize_time import summarize

    runs = [
        {"seconds": s, "cpu_seconds": c, "steal_fraction": f, "sha256": h}
        for s, c, f, h in ((28.0, 50.0, 0.01, "a"), (41.0, 60.0, 0.2, "a"), (29.5, 52.0, 0.0, "a"))
    ]
    got = summarize(runs, target=30.0)
    assert (got["median_seconds"], got["min_seconds"], got["max_seconds"]) == (29.5, 28.0, 41.0)
    assert got["median_cpu_seconds"] == 52.0 and got["median_steal_fraction"] == 0.01
    assert got["met"] and got["identical"]
    runs[0]["seconds"] = runs[2]["seconds"] = 31.0
    runs[1]["sha256"] = "b"
    got = summarize(runs, target=30.0)
    assert not got["met"] and not got["identical"]


def test_flip_margin_gives_the_sqnr_at_which_no_masked_row_flips() -> None:
    ref = np.array([[1.0, 0.8, 0.0], [3.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    noise = np.array([[0.0, 0.4, 0.0], [0.0, 0.5, 0.0], [0.3, 0.0, 0.0]])
    out = ref + noise
    m = flip_margin(ref, out, np.array([True, True, False]))  # row 3 flips, unmasked
    assert m["noise_scale_for_no_flips"] == 0.5  # row 1: gap 0.2 over a rise of 0.4
    assert m["sqnr_db_for_no_flips"] == pytest.approx(
        sqnr_db(ref, out) + 20 * math.log10(2), abs=0.01
    )
    assert m["smallest_fp32_top2_gap"] == pytest.approx(0.2)
    calm = flip_margin(ref, out, np.array([False, True, False]))  # row 2 flips at k = 6
    assert calm["noise_scale_for_no_flips"] == 6.0
    assert calm["sqnr_db_for_no_flips"] == pytest.approx(sqnr_db(ref, out), abs=0.01)
    assert flip_margin(ref, out, np.zeros(3, dtype=bool)) == {}
    assert accuracy(ref, out)["confident_flip_margin"]["noise_scale_for_no_flips"] == 6.0
