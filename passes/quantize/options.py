"""Every choice post-training quantization makes, in one frozen, validated object.

`PtqOptions` is the single home of PTQ's defaults: `quantize()` takes one of
these, the compile stage builds one from its configuration
(`compiler.stages.quantize.ptq_options`), and QAT takes the one its PTQ
initialisation runs with (`passes.qat.QatOptions.ptq`), so no default is
written twice and no flag can be lost between them. Values are checked when the
object is built: a bad one raises `PassOptionError` with a one-line message
saying what to give instead, before any data is read.

The defaults were chosen by measurement on the zoo's MobileNetV2 (see the
`passes.quantize` module docstring and bench/quantize_compare.py).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from passes.errors import PassOptionError
from passes.quantize.calibrate import METHODS

__all__ = ["ROUNDINGS", "PtqOptions"]

#: Weight rounding: GPTQ (Hessian-aware, `rounding.py`) or round-to-nearest.
ROUNDINGS = ("gptq", "nearest")

# per-step sample counts: each must see at least one sample
_STEP_SAMPLES = (
    "equalize_samples",
    "rounding_samples",
    "range_samples",
    "bias_correction_samples",
    "sensitivity_samples",
    "smooth_samples",
    "overflow_samples",
)
OVERFLOW_WEIGHTS = ("7bit", "uint8")  # overflow_weights: re-round to ±63, or store as uint8
FLOAT_CHOICES = ("spec", "measured")  # float_choices: the spec's rule, or timed here
_FLAGS = (
    "equalize",
    "equalize_pairs",
    "range_search",
    "bias_correction",
    "sensitivity",
    "overflow_guard",
    "residual_shrink",
)


@dataclass(frozen=True)
class PtqOptions:
    """What `passes.quantize.quantize` does and on how much data (defaults: the measured ones).

    Calibration: `method` (one of `calibrate.METHODS`; `percentile` for
    "percentile"), `samples` (None: every sample of the source), read in batches
    of `batch_size`. Steps, in order: `equalize` (pairs with `equalize_pairs`,
    `equalize_headroom`, `equalize_alpha_dense`; streams with `stream_alpha`),
    `range_search` (with it the residual stream's range trial, and `residual_shrink`:
    each residual group's ranges shrunk by the factor its output SQNR picks),
    `rounding` ("gptq" or "nearest"), `bias_correction`,
    `sensitivity` and the float fallback (`min_sqnr_db`, `min_agreement`,
    `max_float_layers`), chosen by accuracy gain per latency cost within a latency
    bound: `min_speedup_kept` (the fraction of the time all-INT8 saves over FP32 that
    the fallback must keep; 0.8: an all-INT8 0.50x FP32 may become at most 0.60x; None:
    no bound, most sensitive layers first), `max_latency_ratio` (latency / FP32 at most)
    and `max_latency_ms` (per call), costs profiled over `latency_rounds` paired rounds
    (`layer_latency.py`), and the chosen model timed whole against the bound (600 calls)
    before it is returned. `exclude` names nodes kept in float; `float_stem`
    overrides the spec's stem choice (None: the spec's). `float_choices`: "spec" takes
    the spec's float stem and float skip path as its rules say (the same artifact on
    every machine); "measured" times each against all-INT8 on this machine and keeps it
    only when it costs at most `float_cost_per_db` of all-INT8's latency per dB of
    output SQNR it buys (`float_choices.py`; `--auto-fallback` measures them). `smooth_alpha`: SmoothQuant
    migration strength for dynamic and static INT8 (`smooth.py`; None: off; 0.7 measured
    best on all-MiniLM-L6 dynamic: mean cosine 0.9933 -> 0.9974, worst 0.976 -> 0.991;
    0.5: 0.9888/0.981, 0.8: 0.9974/0.984; static: 0.9858/0.968 -> 0.9978/0.992).
    `overflow_guard`: measure which layers' u8s8 kernels overflow int16 on this CPU
    (AVX2 without VNNI) and apply `overflow_weights` to them: "7bit" (GPTQ to ±63 on
    the channels that overflow, same speed) or "uint8" (same values, slower kernel)
    (`overflow.py`; MobileNetV2 on an AVX2 EPYC: 17.5 -> 21.85 / 21.9 dB held-out, 16
    of 51 layers). The ``*_samples`` fields
    bound the data each step reads; `threads` is onnxruntime's intra-op thread
    count (0: all cores).
    """

    method: str = "percentile"
    percentile: float = 99.99
    samples: int | None = 256
    equalize: bool = True
    equalize_pairs: bool = True
    equalize_headroom: float = 2.0
    equalize_alpha_dense: float = 0.5
    stream_alpha: float = 0.5
    range_search: bool = True
    residual_shrink: bool = True
    rounding: str = "gptq"
    bias_correction: bool = True
    exclude: tuple[str, ...] = ()
    float_stem: bool | None = None
    float_choices: str = "spec"
    float_cost_per_db: float = 0.02
    min_sqnr_db: float | None = None
    min_agreement: float | None = None
    max_float_layers: int | None = None
    min_speedup_kept: float | None = 0.8
    max_latency_ratio: float | None = None
    max_latency_ms: float | None = None
    latency_rounds: int = 12
    sensitivity: bool = False
    batch_size: int = 8
    equalize_samples: int = 64
    rounding_samples: int = 32
    range_samples: int = 32
    bias_correction_samples: int = 64
    sensitivity_samples: int = 32
    smooth_alpha: float | None = 0.7
    smooth_samples: int = 64
    overflow_guard: bool = True
    overflow_weights: str = "7bit"
    overflow_samples: int = 16
    threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.exclude, str):
            raise PassOptionError(
                f"exclude must be a list of node names, not the string {self.exclude!r}"
            )
        object.__setattr__(self, "exclude", tuple(self.exclude))
        self._check_choices()
        self._check_counts()
        self._check_fractions()
        self._check_fallback()

    def _check_choices(self) -> None:
        if self.method not in METHODS:
            raise PassOptionError(
                f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.rounding not in ROUNDINGS:
            raise PassOptionError(
                f"unknown weight rounding {self.rounding!r}; choose gptq or nearest"
            )
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise PassOptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.overflow_weights not in OVERFLOW_WEIGHTS:
            raise PassOptionError(
                f"unknown overflow remedy {self.overflow_weights!r}; choose 7bit or uint8"
            )
        if self.float_choices not in FLOAT_CHOICES:
            raise PassOptionError(
                f"unknown float_choices {self.float_choices!r}; choose spec or measured"
            )
        if not _is_number(self.float_cost_per_db) or not 0 <= self.float_cost_per_db < math.inf:
            raise PassOptionError(
                "float_cost_per_db is the latency (a fraction of all-INT8's) a float choice "
                f"may cost per dB it buys, e.g. 0.02; got {self.float_cost_per_db!r}"
            )
        if self.float_stem is not None and not isinstance(self.float_stem, bool):
            raise PassOptionError(
                f"float_stem must be True, False or None (the spec's), got {self.float_stem!r}"
            )

    def _check_counts(self) -> None:
        if self.samples is not None and (not _is_int(self.samples) or self.samples < 1):
            raise PassOptionError(
                f"the number of calibration samples must be at least 1, got {self.samples}"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise PassOptionError(
                f"the calibration batch size must be at least 1, got {self.batch_size}"
            )
        for name in _STEP_SAMPLES:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise PassOptionError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not _is_int(self.threads) or self.threads < 0:
            raise PassOptionError(
                f"threads must be a whole number, 0 for all cores, got {self.threads!r}"
            )

    def _check_fractions(self) -> None:
        if not _is_number(self.percentile) or not 0 < self.percentile <= 100:
            raise PassOptionError(
                f"percentile must be in (0, 100], e.g. 99.99, got {self.percentile!r}"
            )
        if not _is_number(self.equalize_headroom) or not self.equalize_headroom > 0:
            raise PassOptionError(
                f"equalize_headroom must be a positive number, e.g. 2.0, got {self.equalize_headroom!r}"
            )
        if self.smooth_alpha is not None and (
            not _is_number(self.smooth_alpha) or not 0 < self.smooth_alpha < 1
        ):
            raise PassOptionError(
                f"smooth_alpha must be between 0 and 1 (e.g. 0.7) or None, got {self.smooth_alpha!r}"
            )
        for name in ("equalize_alpha_dense", "stream_alpha"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise PassOptionError(f"{name} must be between 0 and 1, got {value!r}")

    def _check_fallback(self) -> None:
        if self.min_sqnr_db is not None and (
            not _is_number(self.min_sqnr_db) or not math.isfinite(self.min_sqnr_db)
        ):
            raise PassOptionError(
                f"min_sqnr_db must be a finite number of dB, e.g. 20, got {self.min_sqnr_db!r}"
            )
        if self.min_agreement is not None and (
            not _is_number(self.min_agreement) or not 0 <= self.min_agreement <= 1
        ):
            raise PassOptionError(
                f"min_agreement is a fraction between 0 and 1 (e.g. 0.97), got {self.min_agreement!r}"
            )
        if self.min_speedup_kept is not None and (
            not _is_number(self.min_speedup_kept) or not 0 <= self.min_speedup_kept <= 1
        ):
            raise PassOptionError(
                "min_speedup_kept is the fraction of INT8's speedup the fallback keeps, "
                f"between 0 and 1 (e.g. 0.8), or None for no bound; got {self.min_speedup_kept!r}"
            )
        for name in ("max_latency_ratio", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not 0 < value < math.inf):
                raise PassOptionError(f"{name} must be a positive number or None, got {value!r}")
        if not _is_int(self.latency_rounds) or self.latency_rounds < 1:
            raise PassOptionError(
                f"latency_rounds must be a whole number of at least 1, got {self.latency_rounds!r}"
            )
        if self.max_float_layers is not None:
            if not _is_int(self.max_float_layers) or self.max_float_layers < 0:
                raise PassOptionError(
                    f"max_float_layers must be a whole number >= 0, got {self.max_float_layers!r}"
                )
            if not self.fallback:
                raise PassOptionError(
                    "max_float_layers bounds the float fallback: give min_sqnr_db or "
                    "min_agreement with it"
                )

    @property
    def fallback(self) -> bool:
        """Whether layers may be kept in float until a budget holds."""
        return self.min_sqnr_db is not None or self.min_agreement is not None

    @property
    def latency_bounded(self) -> bool:
        """Whether the fallback's choice is bounded by latency (and so needs its costs)."""
        return self.fallback and (
            self.min_speedup_kept is not None
            or self.max_latency_ratio is not None
            or self.max_latency_ms is not None
        )

    @property
    def wants_sensitivity(self) -> bool:
        """Whether per-layer sensitivity is measured (asked for, or needed by the fallback)."""
        return self.sensitivity or self.fallback

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a caller chose), by name."""
        default = PtqOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def report(self, float_stem: bool) -> dict[str, object]:
        """The report's ``quantization.options`` (its keys are part of report.json's schema);
        `float_stem` is the stem choice in effect (the spec's unless overridden)."""
        return {
            "percentile": self.percentile if self.method == "percentile" else None,
            "float_stem": float_stem,
            "equalize": self.equalize,
            "equalize_headroom": self.equalize_headroom if self.equalize else None,
            "stream_alpha": self.stream_alpha if self.equalize else None,
            "range_search": self.range_search,
            "residual_shrink": self.residual_shrink if self.range_search else None,
            "rounding": self.rounding,
            "bias_correction": self.bias_correction,
            "overflow_guard": self.overflow_guard,
            "overflow_weights": self.overflow_weights if self.overflow_guard else None,
            "min_sqnr_db": self.min_sqnr_db,
            "min_agreement": self.min_agreement,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
