"""How the reports write a value in a table cell, shared by report.md and report.html."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 4) -> str:
    """None as a dash, booleans as yes/no, floats to `digits` significant digits."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def overflow_text(overflow: object) -> str:
    """' · N layers overflow int16 on this CPU: M 7-bit, K uint8' when the check found any."""
    if not isinstance(overflow, dict) or not overflow.get("overflowing"):
        return ""
    seven, u8 = overflow.get("seven_bit_channels") or {}, overflow.get("uint8_weights") or []
    return (
        f" · {len(overflow['overflowing'])} of {overflow.get('probed_layers')} layers overflow"
        f" int16 in this CPU's u8s8 kernels: {len(seven)} rounded to 7 bits,"
        f" {len(u8)} stored as uint8"
    )
