"""Original network slimming (Liu et al. 2017): l1 subgradient on BN scales, threshold prune, fine-tune.

Stage 1: train with ``grad_gamma += lam * sign(gamma)`` (:class:`SubgradientHook`).
Stage 2: :func:`threshold_prune` zeroes the channels under a global ``|gamma|`` percentile.
Stage 3: fine-tune with :class:`MaskHook` keeping the pruned channels at exactly zero.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from edgeslim.channels.hooks import TrainHook, register_method
from edgeslim.channels.norm import bn_layers, other_norms
from edgeslim.channels.rounding import aligned_counts
from edgeslim.errors import EdgeslimError
from edgeslim.utils.modes import uncompiled_name

log = logging.getLogger(__name__)


class SubgradientHook(TrainHook):
    """Adds ``lam * sign(gamma)`` to the gradient of every BN scale (vectorised over all BNs)."""

    name = "subgradient"

    def __init__(self, model: nn.Module, lam: float = 1e-4) -> None:
        if lam < 0:
            raise EdgeslimError(f"lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self.gammas = [m.weight for _, m in bn_layers(model)]
        if not self.gammas:
            raise EdgeslimError("the model has no BatchNorm layers; network slimming needs BN scales")

    def after_backward(self, model: nn.Module, optimizer: Optimizer) -> None:
        if self.lam == 0:
            return
        with torch.no_grad():
            for g in self.gammas:
                if g.grad is None:
                    g.grad = torch.zeros_like(g)
            grads = [g.grad for g in self.gammas]
            signs = torch._foreach_sign([g.detach() for g in self.gammas])
            torch._foreach_add_(grads, signs, alpha=self.lam)

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        return gamma_stats(model)

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state.get("lam", self.lam))


class MaskHook(TrainHook):
    """Keeps pruned BN channels (gamma and beta) at exactly zero during fine-tuning."""

    name = "mask"

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> None:
        layers = dict(bn_layers(model))
        if masks is None:  # channels that are zero in both gamma and beta now
            masks = {n: ((m.weight != 0) | (m.bias != 0)).detach().clone() for n, m in layers.items()}
        masks = {uncompiled_name(n): v for n, v in masks.items()}  # (names taken from a compiled wrapper)
        unknown = set(masks) - set(layers)
        if unknown:
            raise EdgeslimError(f"mask names BN layers the model does not have: {sorted(unknown)[:3]}")
        self.masks = {n: masks[n].to(torch.bool) for n in masks}
        self._params = [(layers[n], self.masks[n]) for n in self.masks]

    def _apply(self) -> None:
        with torch.no_grad():
            for bn, keep in self._params:
                keep = keep.to(bn.weight.device)
                bn.weight.mul_(keep)
                bn.bias.mul_(keep)

    def on_train_start(self, model: nn.Module, optimizer: Optimizer) -> None:
        self._apply()

    def after_backward(self, model: nn.Module, optimizer: Optimizer) -> None:
        with torch.no_grad():
            for bn, keep in self._params:
                keep = keep.to(bn.weight.device)
                for p in (bn.weight, bn.bias):
                    if p.grad is not None:
                        p.grad.mul_(keep)

    def after_step(self, model: nn.Module, optimizer: Optimizer) -> None:
        # weight decay and momentum can move masked entries even with zero grads
        self._apply()

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        return gamma_stats(model)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, m in state["masks"].items():
            if n in self.masks:
                self.masks[n].copy_(m.to(torch.bool))


@torch.no_grad()
def gamma_stats(model: nn.Module, eps: float = 1e-2) -> dict[str, float]:
    """Log fields: mean |gamma|, fraction exactly zero, fraction under ``eps``."""
    gs = [m.weight.detach().abs().flatten() for _, m in bn_layers(model)]
    if not gs:
        return {}
    g = torch.cat(gs).float()
    return {
        "gamma_mean": float(g.mean()),
        "gamma_zero_frac": float((g == 0).float().mean()),
        "gamma_small_frac": float((g < eps).float().mean()),
    }


@torch.no_grad()
def threshold_prune(
    model: nn.Module,
    ratio: float,
    min_channels: int = 1,
    *,
    example_input: torch.Tensor | None = None,
    round_to: int = 1,
) -> dict[str, Any]:
    """Zero gamma AND beta of the ``ratio`` fraction of BN channels with the smallest ``|gamma|``.

    The threshold is global (one percentile over all BN channels, as in original network
    slimming), but every layer keeps at least ``min_channels`` channels (its largest ones), so
    no layer is emptied. Returns ``{"threshold", "pruned", "total", "masks", "per_layer"}``
    where ``masks[name]`` is a bool tensor of kept channels.

    With ``example_input`` (one input the model takes) the ranking is by coupled group, as surgery
    removes channels: the BN channels that must go together (a residual stage's, a depthwise
    conv's with the conv before it) form one channel whose importance is their mean ``|gamma|``;
    whole group channels are zeroed, smallest first, until ``ratio`` of the BN channels surgery can
    remove are zero (``removable`` in the result: each BN layer's channel once; a channel surgery keeps
    however zero its BNs are, behind a barrier or shared with a layer without BN, is never zeroed), and
    every group keeps ``min_channels``. ``round_to`` (by group only) then moves each group's count to
    the nearest one surgery keeps at that multiple (its kept and barred channels together: a
    multiple, or the whole group), so surgery removes every zero instead of keeping zeroed channels
    for alignment; the share zeroed moves off ``ratio`` by that rounding (``pruned`` says what it is). Without
    it each BN channel is ranked alone: on a residual or depthwise network most of its zeros then
    share their channel with a nonzero one, surgery keeps them, and the zeroing only damages the
    model (a user's timm ResNet-18 at 0.4: 1,920 zeros, 834 removed).
    """
    if not 0.0 <= ratio < 1.0:
        raise EdgeslimError(f"ratio must be in [0, 1), got {ratio}")
    layers = bn_layers(model)
    if not layers:
        norms = other_norms(model)
        by = (
            f" (it is normalized by {'/'.join(norms)}, which has no per-channel BN scale to rank)"
            if norms
            else ""
        )
        raise EdgeslimError(
            f"the model has no BatchNorm layers{by}; ratio pruning zeroes BN channels, so there is nothing to "
            "prune: give a model built with BatchNorm"
        )
    if round_to < 1:
        raise EdgeslimError(f"round_to must be >= 1, got {round_to}")
    allg = torch.cat([m.weight.detach().abs().flatten().float().cpu() for _, m in layers])
    if ratio > 0 and bool((allg == allg[0]).all()):
        log.warning(
            "every BN scale is %g (an untrained model?): the channels a ratio zeroes are chosen by "
            "their order, not by any importance; train or slim the model first",
            float(allg[0]),
        )
    if example_input is not None:
        return _group_threshold_prune(model, layers, ratio, min_channels, example_input, round_to)
    if round_to > 1:
        raise EdgeslimError("round_to needs example_input: kept counts are rounded per coupled group")
    total = allg.numel()
    k = int(round(ratio * total))
    if k == 0:
        threshold = float("-inf")
    else:
        # the k-th smallest value: channels with |gamma| <= threshold (ties broken by order) go
        threshold = float(torch.kthvalue(allg, k).values)
    # exact count: prune the k smallest globally (stable order breaks ties)
    order = torch.sort(allg, stable=True).indices
    prune_flat = torch.zeros(total, dtype=torch.bool)
    prune_flat[order[:k]] = True
    masks: dict[str, torch.Tensor] = {}
    start = 0
    for name, m in layers:
        n = m.weight.numel()
        prune = prune_flat[start : start + n].clone()
        start += n
        keep_min = min(min_channels, n)
        if int((~prune).sum()) < keep_min:  # never empty a layer: keep its largest channels
            top = torch.topk(m.weight.detach().abs().float().cpu(), keep_min).indices
            prune[top] = False
        masks[name] = ~prune
    return {"threshold": threshold, "total": total, **_zero_masked(layers, masks)}


def _zero_masked(layers: list[tuple[str, nn.Module]], masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Zero gamma and beta where ``masks`` (kept channels, by BN name) are False; ``pruned``, ``masks``
    and ``per_layer`` (kept, channels) of :func:`threshold_prune`'s result."""
    per_layer: dict[str, tuple[int, int]] = {}
    for name, m in layers:
        keep = masks[name]
        m.weight.mul_(keep.to(m.weight.device, m.weight.dtype))
        m.bias.mul_(keep.to(m.bias.device, m.bias.dtype))
        per_layer[name] = (int(keep.sum()), keep.numel())
    pruned = sum(n - k for k, n in per_layer.values())
    return {"pruned": pruned, "masks": masks, "per_layer": per_layer}


def _group_threshold_prune(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    ratio: float,
    min_channels: int,
    x: torch.Tensor,
    round_to: int,
) -> dict[str, Any]:
    """:func:`threshold_prune` by coupled group (see there)."""
    import logging

    from edgeslim.channels.graph import zeroable_bn_groups
    from edgeslim.utils.modes import eval_mode

    with eval_mode(model):  # (the channels surgery removes once zeroed: affine BNs, deployed outputs)
        groups = zeroable_bn_groups(model, x)
    mods = dict(layers)
    total = sum(m.weight.numel() for _, m in layers)

    def layers_of(grp: Any) -> int:  # (a BN called twice is one layer: its channels count once)
        return len({n for n, _ in grp.members})

    removable = sum(grp.size * layers_of(grp) for grp in groups)
    k = int(round(ratio * removable))
    if not removable:
        logging.getLogger(__name__).warning(
            "no BN channel of the model can be removed (each sits behind a barrier, or shares its channel with a "
            "layer without BN, such as a conv with a bias: build_graph shows them); nothing was zeroed"
        )

    # every group channel's importance; the global ranking decides how many of each group go (a
    # group's zeros are its least important channels, as in the global order)
    def importance(grp: Any) -> torch.Tensor:
        return torch.stack(
            [mods[n].weight.detach().abs().float().cpu()[idx.cpu()] for n, idx in grp.members]
        ).mean(0)

    imps = [importance(grp) for grp in groups]
    cut = [0] * len(groups)
    if groups and k > 0:
        imp = torch.cat(imps)
        own = torch.cat([torch.full((grp.size,), gi) for gi, grp in enumerate(groups)])
        zeroed = 0
        for i in torch.sort(imp, stable=True).indices.tolist():
            if zeroed >= k:
                break
            gi = int(own[i])
            if groups[gi].size - cut[gi] <= min_channels:  # (a group keeps its largest: no layer is emptied)
                continue
            cut[gi] += 1
            zeroed += layers_of(groups[gi])
    masks = {name: torch.ones(m.weight.numel(), dtype=torch.bool) for name, m in layers}
    threshold = float("-inf")
    for grp, n, imp in zip(groups, cut, imps):
        if n and round_to > 1:
            n = _aligned_cut(grp.size, grp.fixed, n, round_to, min_channels)
        if not n:
            continue
        low = torch.sort(imp, stable=True).indices[:n]
        threshold = max(threshold, float(imp[low].max()))
        for name, idx in grp.members:
            masks[name][idx.cpu()[low]] = False
    return {"threshold": threshold, "total": total, "removable": removable, **_zero_masked(layers, masks)}


def _aligned_cut(size: int, fixed: int, n: int, round_to: int, min_channels: int) -> int:
    """How many of a group's ``size`` removable channels to zero instead of ``n`` so that the count
    surgery keeps (the ``fixed`` barred channels and the rest) is one it keeps at ``round_to``: a
    multiple below the whole group, or the whole group; the nearest (ties: the larger), keeping at
    least ``min_channels`` removable ones."""
    whole = size + fixed
    want = whole - n
    counts = [c for c in aligned_counts(whole, round_to) if c - fixed >= max(min_channels, 0)]
    if not counts:
        return 0
    best = min(counts, key=lambda c: (abs(c - want), -c))
    return whole - best


@register_method("baseline")
def _baseline(model: nn.Module) -> TrainHook | None:
    """Plain training, no sparsity penalty."""
    return None


@register_method("subgradient")
def _subgradient(model: nn.Module, lam: float = 1e-4) -> TrainHook:
    """Original network slimming: ``lam * sign(gamma)`` added to every BN scale gradient."""
    return SubgradientHook(model, lam=lam)


@register_method("mask")
def _mask(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> TrainHook:
    """Fine-tuning that keeps channels whose gamma and beta are both zero at zero."""
    return MaskHook(model, masks=masks)
