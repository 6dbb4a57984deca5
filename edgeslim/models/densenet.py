"""DenseNet-40 (growth 12) as in network slimming: BN-ReLU-conv3x3 layers, no bottleneck, no compression."""

from __future__ import annotations

import torch
from torch import nn

from edgeslim.models.init import slimming_init
from edgeslim.models.registry import register_model
from edgeslim.models.resnet import _PreActHead


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3(growth), output concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1-avgpool2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(_PreActHead):
    """conv3x3(2*growth) -> 3 dense blocks with 2 transitions -> BN-ReLU -> global pool -> Linear."""

    def __init__(self, depth: int = 40, growth: int = 12, reduction: float = 1.0, num_classes: int = 10,
                 in_channels: int = 3) -> None:  # fmt: skip
        super().__init__()
        n = (depth - 4) // 3
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for b in range(3):
            for _ in range(n):
                blocks.append(DenseLayer(c, growth))
                c += growth
            if b < 2:
                cout = int(c * reduction)
                blocks.append(Transition(c, cout))
                c = cout
        self.features = nn.Sequential(*blocks)
        self._add_head(c, num_classes)
        slimming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.features(self.conv1(x)))


@register_model("densenet40")
def densenet40(num_classes: int = 10, in_channels: int = 3, growth: int = 12) -> DenseNet:
    """DenseNet-40, growth 12, 12 layers per block: 1.06 M parameters, 456 final channels."""
    return DenseNet(40, growth, 1.0, num_classes, in_channels)
