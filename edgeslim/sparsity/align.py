"""Channel counts the target rewards, kept with trained channels during slimming.

A device's kernels run channel counts in blocks (ONNX Runtime's NCHWc convolutions on an
AVX-512 CPU: 16; TensorRT FP16 tensor cores: 8; INT8: 32; see ``alignment`` in the device
profiles). Surgery can round a layer's kept count up to a multiple of the block by putting
zero-scale channels back, but those channels were dead during training: their scale is 0 and
their conv filters got no gradient. :class:`ChannelAligner` instead rounds *during* training:
after every proximal step it keeps each coupled group's alive count at a multiple of
``round_to`` by holding the strongest just-zeroed channels (by their value before the prox)
alive, unshrunk, so the channels kept for alignment keep training. Counts round up as
surgery and :class:`~edgeslim.sparsity.resource.ResourceModel` round them, so a budget that
the resource model says is met is met by the aligned network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from edgeslim.sparsity.resource import ResourceModel, build_resource


class ChannelAligner:
    """Keeps alive counts per channel group at multiples of ``resource.round_to``.

    ``resource`` gives the groups (surgery's dependency graph) and the flat BN layout; call
    the aligner with the new ``xi`` and the vector it was computed from (the prox input).
    """

    def __init__(self, resource: ResourceModel) -> None:
        self.resource = resource
        self.round_to = resource.round_to
        self.total = resource.total

    @torch.no_grad()
    def __call__(self, xi: Tensor, before: Tensor) -> Tensor:
        """``xi`` with the strongest dead channels of every misaligned group set to their ``before`` value."""
        if self.round_to <= 1:
            return xi
        r = self.resource
        rows = xi.view(-1, self.total)
        mag = rows.detach().abs().sum(dim=0).cpu()
        alive = r.alive_from_scales(mag)
        raw = r.raw_counts(alive)
        need = r.round_counts(raw) - raw
        if not bool((need > 0).any()):
            return xi
        strength = r.class_strength(before)
        dead = torch.nonzero(~alive & (r.group_of_class >= 0)).flatten()
        grp = r.group_of_class[dead]
        dead, grp = dead[need[grp] > 0], grp[need[grp] > 0]
        if dead.numel() == 0:
            return xi
        # rank the dead classes of each group by strength (strongest first)
        order = torch.argsort(strength[dead], descending=True, stable=True)
        dead, grp = dead[order], grp[order]
        order = torch.argsort(grp, stable=True)
        dead, grp = dead[order], grp[order]
        first = torch.searchsorted(grp, grp, right=False)
        rank = torch.arange(grp.numel()) - first
        revive = torch.zeros(r.graph.num_classes, dtype=torch.bool)
        revive[dead[rank < need[grp].long()]] = True
        where = revive[r.pos_class].to(xi.device)
        out = rows.clone()
        src = before.view(-1, self.total)
        out[:, where] = src[:, where].to(out.dtype)
        return out.reshape(xi.shape)


def align_channels(
    slimmer: Any, model: nn.Module, example: Tensor, round_to: int, resource: ResourceModel | None = None
) -> None:
    """Give ``slimmer`` (a :class:`~edgeslim.sparsity.prox.ProximalSlimming`) a :class:`ChannelAligner`
    that keeps its alive counts in multiples of ``round_to`` with trained channels; ``resource``: a
    budget's own resource model (one at ``round_to``), else one is built (a MAC model: the groups)."""
    if round_to <= 1:
        return
    if resource is not None and resource.round_to != round_to:
        raise ValueError(f"the resource model is at round_to {resource.round_to}, not {round_to}")
    resource = resource or build_resource(
        model,
        example,
        "macs",
        round_to=round_to,
        shifts_zeroed=bool(getattr(slimmer, "zero_invariant", False)),
    )
    slimmer.aligner = ChannelAligner(resource)
