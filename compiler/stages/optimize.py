"""The optimize stage: cleanup, then fusions, then cleanup again, each pass recorded.

onnx-ir's PassManager runs the passes; `RecordingPass` times each one, counts
nodes before and after and (with `--verify`) checks numerically that it kept
the model's function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx_ir as ir
import onnx_ir.passes as irp

from compiler.ground.errors import EdgecError, InvalidInput
from compiler.recording import PassRecord, RecordingPass
from compiler.stages.boundary import pass_errors
from passes.errors import PassError as PassFailure


def build_passes(
    *,
    fusions: str | None = None,
    keep_weighted_matmuls: bool = False,
    probe: Mapping[str, np.ndarray] | None = None,
) -> list[irp.PassBase]:
    """Cleanup, then fusions, then cleanup again to sweep what fusions left.

    `fusions` names the target's transformer fusion flavour ("onnxruntime" or
    "portable", `Target.fusions`); None runs none of them (a graph every runtime
    reads). `keep_weighted_matmuls` leaves out the fusions that hide a weighted
    MatMul from the INT8 quantizer that runs after this stage.
    """
    from passes.cleanup import cleanup_passes
    from passes.fusion import fusion_passes
    from passes.fusion.transformer import transformer_passes

    xformer = (
        transformer_passes(fusions, keep_weighted_matmuls=keep_weighted_matmuls, probe=probe)
        if fusions is not None
        else []
    )
    return [*cleanup_passes(), *fusion_passes(), *xformer, *cleanup_passes()]


def optimize(
    model: ir.Model,
    *,
    verify: bool = False,
    seed: int = 0,
    fusions: str | None = None,
    keep_weighted_matmuls: bool = False,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> tuple[ir.Model, list[PassRecord]]:
    """Run cleanup and fusion under onnx-ir's PassManager, recording each pass.

    `fusions` and `keep_weighted_matmuls`: see `build_passes`.
    """
    records: list[PassRecord] = []
    verifier = _verifier(seed, feeds) if verify else None
    passes = build_passes(fusions=fusions, keep_weighted_matmuls=keep_weighted_matmuls, probe=feeds)
    wrapped = [RecordingPass(p, records, verifier=verifier) for p in passes]
    with pass_errors():
        try:
            result = irp.PassManager(wrapped, steps=1)(model)
        except irp.PassError as e:
            # the PassManager wraps what a pass raised (once per pass, once per step);
            # ours carry the exit code
            cause: BaseException | None = e
            while isinstance(cause, irp.PassError):
                cause = cause.__cause__
            if isinstance(cause, EdgecError | PassFailure):
                raise cause from None
            raise
    return result.model, records


def _verifier(
    seed: int, feeds: Mapping[str, np.ndarray] | None
) -> Callable[[ir.Model, ir.Model, str], float]:
    """`feeds`: the run's own inputs (token ids below their tables, the model's shapes);
    without them the checker draws its own, which can index past an embedding table."""
    from passes.verify import check_equivalent

    def verify(before: ir.Model, after: ir.Model, name: str) -> float:
        try:
            return float(check_equivalent(before, after, seed=seed, feeds=feeds))
        except AssertionError as e:
            raise InvalidInput(f"--verify: pass {name} changed the model's function: {e}") from None

    return verify
