"""The one definition of "a BatchNorm layer" that slimming, budgets and counting share.

Any subclass of torch's ``_BatchNorm`` counts: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
the lazy variants, and subclasses from other libraries (timm's ``BatchNormAct2d``).
Instance and group norm do not: their scales are not per-channel statistics of a batch.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: the base classes a normalization layer with prunable per-channel scales derives from
NORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm,)


def is_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer of any dimension (affine or not)."""
    return isinstance(module, NORM_TYPES)


def bn_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """All affine BatchNorm layers of ``model`` as ``(name, module)``, in module order."""
    return [(n, m) for n, m in model.named_modules() if is_batchnorm(m) and m.affine]  # type: ignore[misc]
