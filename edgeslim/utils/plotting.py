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


#: round mantissas for the labels of a log axis spanning less than a decade
_MANTISSAS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def _round_log_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Round values from ``lo`` to ``hi`` about evenly spaced on a log scale, the first at the data's
    low end (linear steps left the low data unlabelled: 2, 3, 4 over boxes at 1.3 and 2.5)."""
    import math

    step = (hi / lo) ** (1.0 / most)
    cands = sorted(
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in _MANTISSAS
        if lo * 0.97 <= m * 10.0**e <= hi * 1.03
    )
    ticks: list[float] = []
    for v in cands:  # every round value where there are few, else about evenly thinned
        if len(cands) <= most + 1 or not ticks or v >= ticks[-1] * step:
            ticks.append(float(f"{v:.6g}"))
    if len(ticks) < 3:  # a narrow range (2.1 to 2.3): evenly spaced round values
        from matplotlib.ticker import MaxNLocator

        ticks = [
            float(v) for v in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if v > 0
        ]
    return ticks


def plain_log_axis(axis: Any, lo: float, hi: float) -> None:
    """Label a log-scale ``axis`` (``ax.xaxis``/``ax.yaxis``) over data from ``lo`` to ``hi`` with
    plain numbers: at 1-2-5 steps (decades only over more than three; within one decade, round
    values about evenly spaced on the log scale from the data's low end, linear steps over a narrow
    range), not matplotlib's ``5×10⁻¹`` minor labels."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    lo = max(float(lo), 1e-12)
    hi = max(float(hi), lo * 1.0001)
    decades = math.log10(hi / lo)
    if decades < 1:  # (1-2-5 steps could leave the data without a label: 9, 10, 20 around 14.7)
        axis.set_major_locator(FixedLocator(_round_log_ticks(lo, hi)))
    else:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
