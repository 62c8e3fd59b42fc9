"""Fusion passes: fold a node into its neighbour's constants or compose node chains.

`fusion_passes()` is the ordered list the pipeline runs, after the cleanup passes
(whose shape inference the MatMul rules need).
"""

from __future__ import annotations

import onnx_ir as ir

from passes.fusion.conv_batchnorm import FuseConvBatchNormPass
from passes.fusion.gemm_batchnorm import FuseGemmBatchNormPass
from passes.fusion.matmul_add import FuseMatMulAddPass
from passes.fusion.reshape_chain import FoldReshapeChainPass
from passes.fusion.transpose_chain import FoldTransposeChainPass

__all__ = [
    "FoldReshapeChainPass",
    "FoldTransposeChainPass",
    "FuseConvBatchNormPass",
    "FuseGemmBatchNormPass",
    "FuseMatMulAddPass",
    "fusion_passes",
]


def fusion_passes() -> list[ir.passes.PassBase]:
    """The fusion passes, in the order to run them.

    Chains fold first (a Transpose/Reshape pair between two ops can hide nothing from
    the rules below, but folding it first is never worse); MatMul+Add becomes Gemm
    before BN folding, so that MatMul → Add → BN ends as one Gemm in one run.
    """
    return [
        FoldTransposeChainPass(),
        FoldReshapeChainPass(),
        FuseMatMulAddPass(),
        FuseConvBatchNormPass(),
        FuseGemmBatchNormPass(),
    ]
