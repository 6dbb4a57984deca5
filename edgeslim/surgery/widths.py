"""Whole networks cut to uniform widths: the points that calibrate a measured latency lookup.

A per-layer lookup sums layer times measured one by one; what the whole network does at a
narrower width (weights that fit in cache, kernels that fall off their blocked path, the
profiler's own cost inside each layer's time) it learns only from whole networks measured at
a few widths (``calibration`` in a latency table, :mod:`edgeslim.sparsity.resource`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn

#: uniform widths whose measured whole-network latency calibrates the lookup
CALIBRATION_FRACTIONS = (0.5, 0.25)


def uniform_widths(
    model: nn.Module,
    example_input: Tensor,
    fractions: tuple[float, ...] = CALIBRATION_FRACTIONS,
    round_to: int = 1,
    zero_invariant: bool = False,
) -> dict[float, nn.Module]:
    """``{fraction: slim copy}``: every channel group of ``model`` cut to ``fraction`` of its
    channels (counts rounded up to multiples of ``round_to``, as surgery keeps them; the channels a
    group must keep stay), by surgery, on a float32 CPU copy; ``model`` is not changed.
    ``zero_invariant``: the channels a slim run with it can remove (those a squeeze-excitation gate
    multiplies too), as its resource model counts them (``shifts_zeroed``)."""
    from edgeslim.sparsity.resource import build_resource, zero_channels
    from edgeslim.surgery.prune import prune_with_report

    work = copy.deepcopy(model).cpu().float().eval()
    res = build_resource(work, example_input, "macs", round_to=round_to, shifts_zeroed=zero_invariant)
    out = {}
    for f in fractions:
        cut = copy.deepcopy(work)
        zero_channels(cut, res.uniform_mask(f) == 0)
        out[f] = prune_with_report(cut, example_input, round_to=round_to, inplace=True, check=False).model
    return out
