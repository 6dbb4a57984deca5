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
