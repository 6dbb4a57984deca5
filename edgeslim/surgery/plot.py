"""PNG of the channels per layer before and after surgery (no global matplotlib backend is set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeslim.utils.plotting import new_figure, save_figure


def plot_channels(report: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Bar chart of the output channels of every conv/linear layer, dense vs slim."""
    rows = [r for r in report["layers"] if r["kind"] in ("conv", "linear")]
    names = [r["name"] for r in rows]
    before = [r["before"][-1] for r in rows]
    after = [r["after"][-1] for r in rows]
    fig, ax = new_figure(figsize=(max(6.0, 0.18 * len(rows) + 2), 4.0))
    xs = range(len(rows))
    ax.bar(xs, before, color="#c8d3e0", label="dense")
    ax.bar(xs, after, color="#2b6cb0", label="slim")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_xlabel("conv / linear layer")
    removed = report.get("removed_channels", 0)
    ax.set_title(title or f"Channel surgery: {removed} coupled channels removed, "
                          f"params {report['params_before']:,} -> {report['params_after']:,}", fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
