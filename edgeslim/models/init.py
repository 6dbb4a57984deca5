"""Weight initialisation shared by the zoo models."""

from __future__ import annotations

from torch import nn


def slimming_init(model: nn.Module, bn_scale: float = 0.5) -> None:
    """Kaiming-normal convs, BN scale 0.5 and shift 0 (the network-slimming initialisation)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, bn_scale)
            nn.init.zeros_(m.bias)
