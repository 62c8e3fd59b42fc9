"""Embedding tables stored as int8 rows, dequantized after the lookup.

A transformer's token embedding is often its largest tensor (BERT-base: 23 M of
110 M parameters; all-MiniLM-L6-v2: 11.7 M of 22.7 M), and a Gather is not an
op any INT8 recipe quantizes, so an INT8 artifact that leaves it float barely
shrinks (a random 2-layer BERT stayed at 0.96x its FP32 size). Rewrite, for a
Gather whose data is a large constant float table T (V, D) read only by Gathers
on axis 0:

    Gather(T, ids)  →  Mul(Cast(Gather(T_q, ids), FLOAT), Gather(s, ids))

with T_q int8 (V, D) and s float32 (V, 1), one symmetric scale per row:
s[v] = max|T[v]| / 127, T_q = round(T / s). Only the gathered rows are converted,
so nothing dequantizes the whole table per call (a DequantizeLinear on the table
would, and onnxruntime never folds it); the error is at most s[v]/2 per element,
a relative 0.4% of the row's peak. Rows of zeros get scale 1.

Refuses (leaves float): tables under `min_elements` elements (token-type tables,
the cost of a Cast and a Mul outweighs the bytes), tables that are graph inputs,
not rank 2 with rows of at least 2 values (a (V, 1) table is a row-scale
vector), not float32, or also read by anything but axis-0 Gathers (a tied output
projection), and Gathers on other axes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes import graph_tools

__all__ = ["MIN_ELEMENTS", "QuantizeEmbeddingsPass", "quantize_rows"]

#: the smallest table worth storing as int8 (BERT's 512 x 128 position table is 65 536)
MIN_ELEMENTS = 1 << 14


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 rows, float32 scales of shape (V, 1)): symmetric, one scale per row."""
    peaks = np.abs(table).max(axis=1, keepdims=True)
    scales = np.where(peaks > 0, peaks / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(table / scales), -127, 127).astype(np.int8)
    return q, scales


class QuantizeEmbeddingsPass(ir.passes.InPlacePass):
    """Store large Gather tables as int8 rows with per-row scales (module docstring)."""

    def __init__(self, min_elements: int = MIN_ELEMENTS) -> None:
        super().__init__()
        self.min_elements = min_elements
        self.tables: list[str] = []  # names of the tables rewritten by the last call

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.tables = []
        taken = graph_tools.value_names(graph)
        taken.update(n.name for n in graph if n.name)
        for value in list(graph.initializers.values()):
            gathers = self._gathers(value)
            if gathers:
                self._rewrite(graph, value, gathers, taken)
                self.tables.append(value.name or "")
        return ir.passes.PassResult(model, modified=bool(self.tables))

    def _gathers(self, value: ir.Value) -> list[ir.Node]:
        """The Gathers that read `value` as a table, or [] when it must stay float."""
        table = graph_tools.constant(value)
        if table is None or table.dtype != np.float32 or table.ndim != 2 or table.shape[1] < 2:
            return []  # (V, 1): a per-row scale vector, ours included
        if table.size < self.min_elements or value.is_graph_output():
            return []
        uses = list(value.uses())
        if not uses or not all(
            graph_tools.is_std(u.node, "Gather")
            and u.idx == 0
            and graph_tools.attr_int(u.node, "axis", 0) == 0
            for u in uses
        ):
            return []
        return list(dict.fromkeys(u.node for u in uses))

    def _rewrite(
        self, graph: ir.Graph, value: ir.Value, gathers: list[ir.Node], taken: set[str]
    ) -> None:
        table = graph_tools.constant(value)
        assert table is not None
        q, scales = quantize_rows(table)
        base = value.name or "embedding"
        q_value = graph_tools.new_initializer(graph, f"{base}_int8", q, taken=taken)
        s_value = graph_tools.new_initializer(graph, f"{base}_row_scale", scales, taken=taken)
        for gather in gathers:
            _dequantize_after(graph, gather, q_value, s_value, taken)
        graph.initializers.pop(value.name or "")


def _dequantize_after(
    graph: ir.Graph, gather: ir.Node, q: ir.Value, scales: ir.Value, taken: set[str]
) -> None:
    """Gather(T, ids) → Mul(Cast(Gather(T_q, ids)), Gather(s, ids)), rewired in place."""
    ids = gather.inputs[1]
    assert ids is not None
    out = gather.outputs[0]
    base = gather.name or out.name or "embedding"

    def node(op: str, inputs: list[ir.Value], attrs: dict[str, int], suffix: str) -> ir.Node:
        n = ir.node(
            op, inputs, attrs, name=graph_tools.unique_name(graph, f"{base}_{suffix}", taken)
        )
        n.outputs[0].name = graph_tools.unique_name(graph, f"{base}_{suffix}_output", taken)
        return n

    rows = node("Gather", [q, ids], {"axis": 0}, "int8_rows")
    rows.outputs[0].type = ir.TensorType(ir.DataType.INT8)
    cast = node("Cast", [rows.outputs[0]], {"to": ir.DataType.FLOAT}, "cast")
    cast.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    row_scales = node("Gather", [scales, ids], {"axis": 0}, "row_scales")
    row_scales.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    mul = node("Mul", [cast.outputs[0], row_scales.outputs[0]], {}, "dequantized")
    mul.outputs[0].type = out.type
    mul.outputs[0].shape = out.shape
    graph.insert_before(gather, [rows, cast, row_scales, mul])
    out.replace_all_uses_with(mul.outputs[0], replace_graph_outputs=True)
    graph.remove(gather, safe=True)
