"""CIFAR-style pre-activation ResNets (He et al. 2016), as used by network slimming.

``resnet20``/``resnet56``: basic blocks (BN-ReLU-conv3x3 twice), 16/32/64 channels.
``resnet164``: bottleneck blocks (BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1, x4 expansion).
Projection shortcuts (1x1 conv) take the block's pre-activated input where shape changes.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeslim.models.init import slimming_init
from edgeslim.models.registry import register_model


class PreActBasic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        res = self.shortcut(a) if self.shortcut is not None else x
        out = self.conv1(a)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + res


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        res = self.shortcut(a) if self.shortcut is not None else x
        out = self.conv1(a)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + res


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class _PreActHead(nn.Module):
    """A network ending in the pre-activation classifier head: ``bn``, ``relu``, global ``pool``
    and ``fc`` (methods, not functions, so that TorchScript compiles them)."""

    def _add_head(self, channels: int, num_classes: int) -> None:
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last feature map."""
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(x))), 1))


class PreActResNet(_PreActHead):
    """conv3x3(16) -> 3 stages (stride 1, 2, 2) -> BN-ReLU -> global average pool -> Linear."""

    def __init__(self, depth: int, bottleneck: bool, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        block = PreActBottleneck if bottleneck else PreActBasic
        per = (depth - 2) // (9 if bottleneck else 6)
        if per < 1 or (depth - 2) % (9 if bottleneck else 6):
            raise ValueError(f"depth {depth} is not 6n+2 (basic) / 9n+2 (bottleneck)")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        c = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(per):
                blocks.append(block(c, planes, stride if i == 0 else 1))
                c = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self._add_head(c, num_classes)
        slimming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.layer3(self.layer2(self.layer1(self.conv1(x)))))


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """Pre-activation ResNet-20 (basic blocks, 3x3 per stage), 0.27 M parameters."""
    return PreActResNet(20, False, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """Pre-activation ResNet-56 (basic blocks, 9 per stage), 0.86 M parameters."""
    return PreActResNet(56, False, num_classes, in_channels)


@register_model("resnet164")
def resnet164(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    """Pre-activation ResNet-164 (bottleneck blocks, 18 per stage), 1.7 M parameters."""
    return PreActResNet(164, True, num_classes, in_channels)
