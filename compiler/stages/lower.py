"""The lower stage: write each candidate in the target's format, plus the FP32 baseline.

The baseline is the unpruned FP32 model lowered for the same target, so
speedups are measured against what the user would ship without edgec's
transforms. When the FP32 candidate is that model, it is lowered once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from targets.base import Artifact, Target


@dataclass(frozen=True)
class Lowered:
    """The artifacts per precision, and the baseline (possibly the fp32 artifact itself)."""

    artifacts: dict[str, Artifact]
    baseline: Artifact


def lower(
    target: Target,
    candidates: Mapping[str, ir.Model],
    fp32_model: ir.Model,
    staging: Path,
    *,
    stem: str,
    fmt: str | None,
    pruned: bool,
) -> Lowered:
    """Lower every candidate into `staging`; the baseline goes to a private subfolder
    (left behind at publishing) unless the fp32 candidate is the unpruned model."""
    artifacts = {
        p: target.lower(m, staging, stem=f"{stem}.{p}", fmt=fmt) for p, m in candidates.items()
    }
    if "fp32" in artifacts and not pruned:
        return Lowered(artifacts, artifacts["fp32"])
    base_dir = Path(tempfile.mkdtemp(prefix=".baseline-", dir=staging))
    baseline = target.lower(fp32_model, base_dir, stem=f"{stem}.fp32", fmt=fmt)
    return Lowered(artifacts, baseline)
