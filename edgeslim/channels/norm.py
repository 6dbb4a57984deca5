"""The one definition of "a BatchNorm layer" that slimming, budgets and counting share.

Any subclass of torch's ``_BatchNorm`` counts: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
the lazy variants, and subclasses from other libraries (timm's ``BatchNormAct2d``).
Instance and group norm do not: their scales are not per-channel statistics of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeslim.utils.modes import training_mode, uncompiled

#: the base classes a normalization layer with prunable per-channel scales derives from
NORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm,)
#: batches (of 128 training images, no augmentation) BN statistics are re-estimated on
CALIB_BATCHES = 4
#: running statistics count as settled once their starting values weigh less than this in them
SETTLED_WEIGHT = 0.05


def is_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer of any dimension (affine or not), also compiled to
    TorchScript (scripted or traced: recognised by the one ``aten::batch_norm`` its forward runs)."""
    return isinstance(module, NORM_TYPES) or _compiled_batchnorm(module)


def _compiled_batchnorm(module: nn.Module) -> bool:
    if not isinstance(module, torch.jit.ScriptModule):
        return False
    weight, var = getattr(module, "weight", None), getattr(module, "running_var", None)
    if not isinstance(var, torch.Tensor) or (weight is not None and weight.shape != var.shape):
        return False
    try:
        kinds = [n.kind() for n in module.inlined_graph.nodes()]
    except (AttributeError, RuntimeError):  # a module without a compiled forward
        return False
    return kinds.count("aten::batch_norm") == 1


def bn_affine(module: nn.Module) -> bool:
    """Whether a BatchNorm layer (``is_batchnorm``) has a scale and shift, compiled ones included."""
    affine = getattr(module, "affine", None)  # a traced module keeps no such attribute
    return (
        bool(affine)
        if isinstance(affine, bool)
        else isinstance(getattr(module, "weight", None), torch.Tensor)
    )


def bn_channels(module: nn.Module) -> int:
    """The channel count of a BatchNorm layer (``is_batchnorm``), compiled ones included."""
    n = getattr(module, "num_features", None)
    return int(n) if isinstance(n, int) else int(module.running_var.numel())


def bn_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """All affine BatchNorm layers of ``model`` as ``(name, module)``, in module order (of a
    ``torch.compile`` wrapper: of its module, named as the channel graph names them)."""
    return [(n, m) for n, m in uncompiled(model).named_modules() if is_batchnorm(m) and bn_affine(m)]  # type: ignore[misc]


#: normalization layers without per-batch channel statistics (no BN scale to slim by), by the name said
OTHER_NORMS: dict[str, tuple[type[nn.Module], ...]] = {
    "LayerNorm": (nn.LayerNorm,),
    "GroupNorm": (nn.GroupNorm,),
    "InstanceNorm": (nn.modules.instancenorm._InstanceNorm,),
    "RMSNorm": tuple(t for t in (getattr(nn, "RMSNorm", None),) if t is not None),
}


def other_norms(model: nn.Module) -> list[str]:
    """The kinds of :data:`OTHER_NORMS` layers ``model`` has (``["LayerNorm"]`` for a ConvNeXt), in
    that order, then ``FrozenBatchNorm2d`` (torchvision's frozen BN: fixed scales, none trained): what
    normalizes a model without BatchNorm, which network slimming cannot prune by."""
    mods = list(uncompiled(model).modules())
    found = [name for name, types in OTHER_NORMS.items() if types and any(isinstance(m, types) for m in mods)]
    try:  # (torchvision is optional: a model holding its layer has imported it)
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError:
        return found
    return found + ["FrozenBatchNorm2d"] * any(isinstance(m, FrozenBatchNorm2d) for m in mods)


def zero_flat(
    scales_and_shifts: Iterable[tuple[Tensor, Tensor | None]], dead: Tensor, with_shift: bool = True
) -> int:
    """Set BN scales (and shifts, ``with_shift``) to exactly 0 where ``dead`` (bool, flat over the
    layers' channels in the order given) is True; returns how many. ``masked_fill``, so a scale
    that was inf or NaN becomes 0 too."""
    start, n = 0, 0
    with torch.no_grad():
        for scale, shift in scales_and_shifts:
            size = scale.numel()
            mask = dead[start : start + size].to(scale.device).view_as(scale)
            scale.masked_fill_(mask, 0.0)
            if with_shift and shift is not None:
                shift.masked_fill_(mask, 0.0)
            start, n = start + size, n + int(mask.sum())
    return n


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: list[Tensor]) -> None:
    """Re-estimate every BN layer's running mean/var on ``batches`` (cumulative average, train
    mode, no gradient; no weight changes). Channels removed late in training change the
    statistics of the layers after them faster than the running averages follow."""
    bns = [m for m in model.modules() if is_batchnorm(m) and getattr(m, "track_running_stats", False)]
    if not bns or not batches:
        return
    momenta = [m.momentum for m in bns]

    calls = dict.fromkeys(bns, 0)

    def average(m: nn.Module, _: Any) -> None:
        """1/(calls so far + 1) before each call: the cumulative average PyTorch keeps for momentum=None,
        as a float (a user's BN may pass it to F.batch_norm, which refuses None), counted per call (a BN
        called twice in a forward) and here (such a BN does not count num_batches_tracked)."""
        calls[m] += 1
        m.momentum = 1.0 / calls[m]

    for m in bns:
        m.reset_running_stats()
    hooks = [m.register_forward_pre_hook(average) for m in bns]
    try:
        with training_mode(model, True):
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mom in zip(bns, momenta):
            m.momentum = mom


def unsettled_momentum(model: nn.Module, steps: int) -> float | None:
    """The smallest BN momentum in ``model`` whose running statistics, after ``steps`` training
    steps, still hold more than :data:`SETTLED_WEIGHT` of their starting values ((1 - m)^steps);
    None when every layer's have settled. torchvision's MobileNetV3 and timm's ``tf_`` models use
    0.01: about 300 steps before their evaluation means anything. A momentum of 0 (statistics frozen
    on purpose) and None (a cumulative average) never count."""
    momenta = [
        float(m.momentum)
        for m in model.modules()
        if is_batchnorm(m) and getattr(m, "track_running_stats", False) and m.momentum  # (not None, not 0)
    ]
    low = min(momenta, default=None)
    return low if low is not None and (1.0 - low) ** steps > SETTLED_WEIGHT else None
