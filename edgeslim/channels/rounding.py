"""The channel counts surgery keeps: one rule for surgery, the budget, one-shot pruning and the
latency table's sweep.

A coupled group of ``size`` channels that keeps ``k`` of them after its zeros are removed keeps
:func:`kept_count` ``(k)``: at least one channel (no layer is emptied), and with a channel
multiple ``round_to`` > 1 the next multiple up, capped at the whole group (a group narrower than
the multiple stays whole). Surgery returns its strongest zero channels to reach that count; the
budget prices the counts the same way (:func:`kept_counts`, on tensors); :func:`aligned_counts`
lists the counts the rule leaves as they are, the ones a pruner choosing how many to zero should
aim at. Imports no torch (the sweep runs on a device without it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def _check(round_to: int) -> None:
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")


def kept_count(kept: float, size: int, round_to: int) -> float:
    """The channels surgery keeps of a ``size``-channel group when ``kept`` are nonzero: at least
    one, and with ``round_to`` > 1 rounded up to a multiple of it, capped at ``size``."""
    _check(round_to)
    k = max(kept, 1)
    return min(math.ceil(k / round_to) * round_to, size) if round_to > 1 else k


def kept_counts(kept: Tensor, size: Tensor | int, round_to: int) -> Tensor:
    """:func:`kept_count` per group of a tensor of counts (float or integer; the result has
    ``kept``'s dtype), ``size`` per group or one for all."""
    _check(round_to)
    k = kept.clamp(min=1)
    if round_to > 1:
        if k.is_floating_point():
            up = (k / round_to).ceil() * round_to
        else:
            up = (k + (round_to - 1)).div(round_to, rounding_mode="floor") * round_to
        k = up.clamp(max=size) if isinstance(size, int) else up.minimum(size.to(up.dtype))
    return k


def aligned_counts(size: int, round_to: int) -> list[int]:
    """The counts of a ``size``-channel group that :func:`kept_count` leaves unchanged, ascending:
    the multiples of ``round_to`` below ``size``, and ``size`` itself."""
    _check(round_to)
    return [*range(round_to, size, round_to), size] if size > 0 else []
