"""Markdown tables for reports and benchmark results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def cell(v: Any) -> str:
    """Default cell text: ``-`` for None, 4 significant digits for floats, lists joined."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "; ".join(str(x) for x in v)
    return str(v)


def markdown_table(
    cols: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Callable[[Any], str] = cell
) -> str:
    """A GitHub-flavoured Markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
