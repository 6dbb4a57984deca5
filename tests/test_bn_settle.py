"""BatchNorm statistics that have not settled are re-estimated before the trainer evaluates.

torchvision's MobileNetV3 (and timm's ``tf_`` models) use BN momentum 0.01: a short run's running
statistics still hold their starting zeros and ones, and its test accuracy sat at chance while the
training accuracy rose (a user trial: 10.0% for every epoch, 29.9% once the statistics were
re-estimated)."""

from __future__ import annotations

import torch
from torchvision.models import mobilenet_v3_small, resnet18

from edgeslim.channels.norm import unsettled_momentum
from edgeslim.data import load_dataset
from edgeslim.train import TrainConfig, fit


def test_unsettled_momentum_follows_the_steps() -> None:
    low, default = mobilenet_v3_small(num_classes=10), resnet18(num_classes=10)
    assert unsettled_momentum(low, 100) == 0.01 and unsettled_momentum(low, 300) is None
    assert unsettled_momentum(default, 20) == 0.1 and unsettled_momentum(default, 30) is None
    for m in default.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average has no starting values to outweigh
    assert unsettled_momentum(default, 1) is None
    for m in default.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0  # statistics frozen on purpose: never re-estimated
    assert unsettled_momentum(default, 1) is None


def test_a_short_run_evaluates_with_statistics_of_the_training_images(cifar_zip) -> None:
    bundle = load_dataset("cifar10", data_dir=cifar_zip, subset=256, test_subset=64)
    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=10)
    res = fit(model, bundle, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu"))
    assert res.history[-1]["bn_recalibrated_on_images"] == 256
    # the first BN's running mean is the mean of its input over the 256 training images
    first = model.features[0]
    x = torch.cat([xb for xb, _ in bundle.loader("train", 128, shuffle=False, augment=False)])
    model.eval()
    with torch.no_grad():
        pre = first[0](x)  # the conv before that BN
    want = pre.mean(dim=(0, 2, 3))
    got = first[1].running_mean
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got[:4], want[:4])
    # the default momentum after enough steps: nothing is re-estimated
    res = fit(resnet18(num_classes=10), bundle, TrainConfig(epochs=8, batch_size=64, lr=0.05, device="cpu"))
    assert "bn_recalibrated_on_images" in res.history[0]
    assert "bn_recalibrated_on_images" not in res.history[-1]
