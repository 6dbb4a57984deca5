"""Figures without pyplot: no global backend is chosen, so a user's notebook keeps its own.

Draw on :func:`new_figure` and write with :func:`save_figure` (atomic: the PNG appears
whole or not at all). matplotlib is optional (the ``train`` extra) and imported here only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import require
from edgeslim.utils.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: resolution of every PNG edgeslim writes
DPI = 110


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure and its axes (as ``plt.subplots`` returns them) that belong to no pyplot state."""
    mpl_figure = require("matplotlib.figure", "for PNG plots")
    fig = mpl_figure.Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def plain_log_axis(axis: Any, lo: float, hi: float) -> None:
    """Label a log-scale ``axis`` (``ax.xaxis``/``ax.yaxis``) over data from ``lo`` to ``hi`` with
    plain numbers: at 1-2-5 steps (decades only over more than three; within one decade, evenly
    spaced round values), not matplotlib's ``5×10⁻¹`` minor labels."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    lo = max(float(lo), 1e-12)
    hi = max(float(hi), lo * 1.0001)
    decades = math.log10(hi / lo)
    if decades < 1:  # (1-2-5 steps could leave the data without a label: 9, 10, 20 around 14.7)
        ticks = [v for v in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if v > 0]
        axis.set_major_locator(FixedLocator(ticks))
    else:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
