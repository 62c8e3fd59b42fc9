"""The spec's float choices, each kept or dropped by its measured cost and gain.

A `QuantSpec` makes two choices by rule: the stem computes in float (`float_stem`)
and chained residual Adds add in float (`float_skip`). Each buys accuracy, and each
may cost time, by an amount only the machine that runs the model can say. On
MobileNetV2 on a 2-core AVX-512 VNNI EPYC (1,200 calls a model, paired, three runs)
the float stem cost nothing measurable (-5 to 0% of all-INT8's time) for 1.3 dB of
logit SQNR, while the float skip path cost 3.5-8% (nine Adds in chains, each then a
dequantize, a float add and a quantize kernel instead of one int8 add) for 0.27 dB.

`float_choices` names, for one graph, the choices that change its Q/DQ model and the
quantization with any of them taken; `decide` keeps a choice when it buys accuracy
and costs at most `per_db` of all-INT8's latency per dB it buys, unless the timing
noise cannot tell its cost from that price: then the spec's rule stands. The
measurement itself (timing and scoring the models) is the PTQ step's
(`steps.FloatChoices`): this module has no runtime in it.

The choices are measured only when asked (`PtqOptions.float_choices = "measured"`,
which `--auto-fallback` sets on the CPU target): a timed choice can differ from run to
run and machine to machine, and edgec's default artifact is byte-identical for the
same inputs and flags, so by default the spec's rules stand (set from the
measurement above).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from passes.quantize.plan import plan_quantization, stem_nodes
from passes.quantize.spec import QuantSpec

#: what each choice is, for the report
DESCRIPTIONS = {
    "stem": "the stem (first Conv and the depthwise Convs after it) computes in float",
    "skip": "chained residual Adds add in float (the float skip path)",
}


@dataclass(frozen=True)
class ChoiceSet:
    """The float choices that change one graph's Q/DQ model, and the quantization (spec and
    float set) with any of them on: everything else int8."""

    spec: QuantSpec  # the spec as given; its float_stem and float_skip are its rules
    user_excluded: frozenset[str]  # kept float by the caller, whatever is chosen
    stem: tuple[str, ...]  # the stem's nodes (`plan.stem_nodes`)
    nodes: dict[str, tuple[str, ...]]  # choice -> the nodes whose computation it changes

    spec_stem: bool = False  # whether the spec's rules keep this stem float

    def config(self, on: Collection[str]) -> tuple[QuantSpec, frozenset[str]]:
        """(spec, float set) with the choices in `on` taken and the others not."""
        stem = "stem" in on
        spec = self.spec.replace(
            float_stem=stem, float_stem_into_max_pool=True, float_skip="skip" in on
        )
        return spec, self.user_excluded | (frozenset(self.stem) if stem else frozenset())

    @property
    def by_spec(self) -> frozenset[str]:
        """The choices the spec's rules take."""
        rules = {"stem": self.spec_stem, "skip": self.spec.float_skip}
        return frozenset(n for n in self.nodes if rules[n])


def float_choices(
    graph: ir.Graph, spec: QuantSpec, user_excluded: Collection[str] = ()
) -> ChoiceSet:
    """The choices this graph offers: "stem" when it has a stem the caller did not keep
    float (one the spec's rule leaves int8, before a MaxPool, is measured too), "skip"
    when adding chained residual Adds in float changes its plan."""
    user = frozenset(user_excluded)
    stem = tuple(n for n in stem_nodes(graph) if n not in user)  # whatever the spec's rule
    spec_stem = spec.float_stem and bool(set(stem) & set(stem_nodes(graph, spec)))
    nodes: dict[str, tuple[str, ...]] = {}
    if stem:
        nodes["stem"] = stem
    off = spec.replace(float_stem=False)
    int8_adds = plan_quantization(graph, off.replace(float_skip=False), user).nodes
    float_adds = set(plan_quantization(graph, off.replace(float_skip=True), user).nodes)
    skip = tuple(n for n in int8_adds if n not in float_adds)
    if skip:
        nodes["skip"] = skip
    return ChoiceSet(spec, user, stem, nodes, spec_stem)


def keep(gain_db: float, cost: float, per_db: float) -> bool:
    """Keep a float choice that buys `gain_db` of output SQNR for `cost` (latency as a
    fraction of the all-INT8 model's: 0.05 = 5% slower) when it buys something and costs
    at most `per_db` per dB it buys (a choice that costs nothing or less is kept)."""
    if not math.isfinite(gain_db):
        return gain_db > 0
    return gain_db > 0 and cost <= per_db * gain_db


@dataclass(frozen=True)
class Measured:
    """One choice's measurement: the SQNR with it alone on (everything else int8), the
    all-INT8 SQNR, its latency as a ratio to all-INT8's (the median over rounds of the
    paired ratio) and that median's standard error (`median_error`)."""

    sqnr_db: float
    int8_sqnr_db: float
    latency_ratio: float
    latency_error: float = 0.0

    @property
    def gain_db(self) -> float:
        if math.isinf(self.sqnr_db) and math.isinf(self.int8_sqnr_db):
            return 0.0
        return self.sqnr_db - self.int8_sqnr_db

    @property
    def cost(self) -> float:
        return self.latency_ratio - 1.0


def median_error(ratios: Sequence[float]) -> float:
    """The standard error of the median of per-round ratios, from their spread (1.4826 x
    the median absolute deviation estimates a normal sigma; the median's error is
    sqrt(pi/2) sigma / sqrt(n)); 0 for fewer than two rounds."""
    if len(ratios) < 2:
        return 0.0
    med = statistics.median(ratios)
    mad = statistics.median(abs(r - med) for r in ratios)
    return math.sqrt(math.pi / 2) * 1.4826 * mad / math.sqrt(len(ratios))


#: a measured cost this many standard errors or fewer from a choice's price does not
#: overrule the spec's rule (at 300 calls a model, MobileNetV2's skip path measured
#: 1.03-1.05x all-INT8 in three runs and 0.99x in a fourth)
NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class Decision:
    """A choice's outcome and what decided it."""

    kept: bool
    by: str  # "measurement", or "spec" when the cost is within the noise of its price


def decide(
    measured: Mapping[str, Measured], per_db: float, by_spec: Collection[str] = ()
) -> dict[str, Decision]:
    """Each choice on its own measurement (their costs are taken as additive: each was
    timed alone against all-INT8). A choice that buys no accuracy is dropped; one whose
    cost lies within `NOISE_SIGMAS` standard errors of its price keeps the spec's rule
    (in `by_spec` or not), so timing noise alone never overrules it."""
    out: dict[str, Decision] = {}
    for name, m in measured.items():
        priced = m.gain_db > 0 and math.isfinite(m.gain_db)
        if priced and abs(m.cost - per_db * m.gain_db) <= NOISE_SIGMAS * m.latency_error:
            out[name] = Decision(name in by_spec, "spec")
        else:
            out[name] = Decision(keep(m.gain_db, m.cost, per_db), "measurement")
    return out


def _finite(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def report_rows(
    choices: ChoiceSet, measured: Mapping[str, Measured], decided: Mapping[str, Decision]
) -> list[dict[str, object]]:
    """report.json's `quantization.float_choices.choices`: one row per choice."""
    return [
        {
            "choice": name,
            "what": DESCRIPTIONS[name],
            "nodes": list(choices.nodes[name]),
            "by_spec": name in choices.by_spec,
            "sqnr_db": _finite(m.sqnr_db),
            "int8_sqnr_db": _finite(m.int8_sqnr_db),
            "gain_db": _finite(m.gain_db),
            "latency_vs_int8": round(m.latency_ratio, 4),
            "latency_error": round(m.latency_error, 4),
            "kept_float": decided[name].kept,
            "decided_by": decided[name].by,
        }
        for name, m in measured.items()
    ]
