"""report.json as frozen dataclasses: each stage hands back typed facts, not string keys.

`Report.to_dict()` writes exactly the design contract's schema (top-level keys
in `REPORT_KEYS` order, then the extra sections `pruning`, `quantization`,
`auto`; every key present, null where a stage did not run). A test pins the
key set (tests/compiler/test_report_schema.py). The writers of json, md and
html work from that dict (`compiler.report`), so the schema lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from compiler.evaluate import Accuracy
from compiler.gates import GateResult
from compiler.recording import PassRecord
from targets.latency import LatencyStats, latency_ratio

#: The design contract's top-level keys, in the order report.json writes them.
REPORT_KEYS = (
    "edgec_version",
    "model",
    "target",
    "precision",
    "passes",
    "artifact",
    "baseline",
    "latency_ms",
    "accuracy",
    "gates",
    "passed",
    "seconds",
)

#: Sections beyond the contract's keys, also always present (null when the stage did not run).
EXTRA_KEYS = ("pruning", "quantization", "fp16", "auto")


@dataclass(frozen=True)
class ModelInfo:
    """The source model as loaded, before any pass."""

    name: str
    source: str
    sha256: str
    params: int
    opset: int | None
    nodes: int

    @classmethod
    def of(cls, name: str, kind: str, sha256: str, proto: onnx.ModelProto) -> ModelInfo:
        g = proto.graph
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        params = int(sum(int(np.prod(t.dims)) for t in g.initializer))
        return cls(name, kind, sha256, params, opset, len(g.node))


@dataclass(frozen=True)
class ArtifactInfo:
    """The published artifact: where it lands in the output directory, its size and hash."""

    path: str
    format: str
    size_bytes: int
    compressed_size_bytes: int
    sha256: str


@dataclass(frozen=True)
class BaselineInfo:
    """The FP32 baseline measured in the same run, and the ratios against it."""

    size_bytes: int
    latency_ms: float
    speedup: float
    latency_ratio: float
    size_ratio: float
    torch_latency_ms: float | None
    speedup_vs_torch: float | None
    precision: str = "fp32"
    #: how torch eager was timed: its intra-op threads (the onnxruntime runs' count)
    #: and untimed warm-up calls; None without a torch baseline
    torch_threads: int | None = None
    torch_warmup: int | None = None

    @classmethod
    def compare(
        cls,
        latency: LatencyStats,
        base: LatencyStats,
        torch: LatencyStats | None,
        *,
        size_bytes: int,
        base_size_bytes: int,
    ) -> BaselineInfo:
        # paired per round (targets.latency.latency_ratio): robust to machine drift
        ratio = latency_ratio(latency, base)
        return cls(
            size_bytes=base_size_bytes,
            latency_ms=base.to_dict()["p50"],
            speedup=round(1 / ratio, 4),
            latency_ratio=round(ratio, 4),
            size_ratio=round(size_bytes / base_size_bytes, 4),
            torch_latency_ms=torch.to_dict()["p50"] if torch else None,
            speedup_vs_torch=round(torch.p50 / latency.p50, 4) if torch else None,
            torch_threads=torch.threads if torch else None,
            torch_warmup=torch.warmup if torch else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"precision": d.pop("precision"), **d}


@dataclass(frozen=True)
class Seconds:
    """Wall time of the run's phases (calibrate is None without quantization)."""

    compile: float
    calibrate: float | None
    measure: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "compile": round(self.compile, 3),
            "calibrate": None if self.calibrate is None else round(self.calibrate, 3),
            "measure": round(self.measure, 3),
        }


@dataclass(frozen=True)
class Report:
    """One compile run's facts; `to_dict()` is report.json."""

    edgec_version: str
    model: ModelInfo
    target: str
    precision: str
    passes: Sequence[PassRecord]
    artifact: ArtifactInfo
    baseline: BaselineInfo
    latency: LatencyStats
    accuracy: Accuracy
    accuracy_source: str
    seconds: Seconds
    pruning: Mapping[str, Any] | None = None
    quantization: Mapping[str, Any] | None = None
    fp16: Mapping[str, Any] | None = None
    auto: Mapping[str, Any] | None = None
    gates: Sequence[GateResult] = field(default_factory=tuple)
    #: what the numbers cannot say by themselves (e.g. NaN/Inf weights in the source)
    warnings: Sequence[str] = ()
    #: peak memory of a process running the artifact (measured when a memory budget asks)
    memory: Mapping[str, Any] | None = None
    #: the machine the latency was measured on (compiler.machine.machine_info)
    environment: Mapping[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgec_version": self.edgec_version,
            "model": asdict(self.model),
            "target": self.target,
            "precision": self.precision,
            "passes": [r.to_dict() for r in self.passes],
            "artifact": asdict(self.artifact),
            "baseline": self.baseline.to_dict(),
            "latency_ms": self.latency.to_dict(),
            "accuracy": {**self.accuracy.to_dict(), "source": self.accuracy_source},
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "seconds": self.seconds.to_dict(),
            "pruning": None if self.pruning is None else dict(self.pruning),
            "quantization": None if self.quantization is None else dict(self.quantization),
            "fp16": None if self.fp16 is None else dict(self.fp16),
            "auto": None if self.auto is None else dict(self.auto),
            "warnings": list(self.warnings),
            "memory": None if self.memory is None else dict(self.memory),
            "environment": None if self.environment is None else dict(self.environment),
        }
