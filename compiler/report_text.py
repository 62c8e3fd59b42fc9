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
