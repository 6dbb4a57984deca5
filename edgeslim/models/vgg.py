"""CIFAR-style VGG with BatchNorm (network-slimming configurations) and a small VGG."""

from __future__ import annotations

import torch
from torch import nn

from edgeslim.models.init import slimming_init
from edgeslim.models.registry import register_model

CFGS: dict[str, list[int | str]] = {
    # 448 BN channels; trains to >92.5% on Fashion-MNIST in a few CPU epochs.
    "vgg-small": [32, 32, "M", 64, 64, "M", 128, 128, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    # The 19-layer configuration of the network-slimming paper (no last max-pool).
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
}  # fmt: skip


class VGG(nn.Module):
    """Conv3x3-BN-ReLU stacks, global average pool, one Linear (network-slimming style)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]  # fmt: skip
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        slimming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _make(name: str):
    def build(num_classes: int = 10, in_channels: int = 3) -> VGG:
        return VGG(CFGS[name], num_classes=num_classes, in_channels=in_channels)

    build.__doc__ = f"VGG configuration {name!r}: {CFGS[name]}"
    return build


for _name in CFGS:
    register_model(_name)(_make(_name))
