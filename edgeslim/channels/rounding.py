"""The channel counts surgery keeps: one rule for surgery, the budget and one-shot pruning.

A coupled group of ``size`` channels that keeps ``k`` of them after its zeros are removed keeps
:func:`kept_counts` ``(k)``: at least one channel (no layer is emptied), and with a channel
multiple ``round_to`` > 1 the next multiple up, capped at the whole group (a group narrower than
the multiple stays whole). Surgery returns its strongest zero channels to reach that count; the
budget prices the counts the same way; :func:`aligned_counts` lists the counts the rule leaves as
they are, the ones a pruner choosing how many to zero should aim at.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kept_counts(kept: Tensor, size: Tensor | int, round_to: int) -> Tensor:
    """Per group, the channels surgery keeps when ``kept`` of its ``size`` are nonzero: at least
    one, rounded up to a multiple of ``round_to`` and capped at ``size`` (float or integer tensors;
    the result has ``kept``'s dtype)."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    k = torch.clamp(kept, min=1)
    if round_to > 1:
        if k.is_floating_point():
            up = torch.ceil(k / round_to) * round_to
        else:
            up = torch.div(k + (round_to - 1), round_to, rounding_mode="floor") * round_to
        k = torch.minimum(up, torch.as_tensor(size, dtype=k.dtype))
    return k


def aligned_counts(size: int, round_to: int) -> list[int]:
    """The counts of a ``size``-channel group that :func:`kept_counts` leaves unchanged, ascending:
    the multiples of ``round_to`` below ``size``, and ``size`` itself."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    return [*range(round_to, size, round_to), size] if size > 0 else []
