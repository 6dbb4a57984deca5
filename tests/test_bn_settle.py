"""BatchNorm statistics that have not settled are re-estimated before the trainer evaluates.

torchvision's MobileNetV3 (and timm's ``tf_`` models) use BN momentum 0.01: a short run's running
statistics still hold their starting zeros and ones, and its test accuracy sat at chance while the
training accuracy rose (a user trial: 10.0% for every epoch, 29.9% once the statistics were
re-estimated)."""

from __future__ import annotations

import logging

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


def test_a_short_run_evaluates_with_statistics_of_the_training_images(cifar_zip, caplog) -> None:
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
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgeslim"):
        res = fit(
            resnet18(num_classes=10), bundle, TrainConfig(epochs=8, batch_size=64, lr=0.05, device="cpu")
        )
    assert "bn_recalibrated_on_images" in res.history[0] and "bn_recalibrated_on_images" in res.history[1]
    assert "bn_recalibrated_on_images" not in res.history[-1]
    said = [r for r in caplog.records if "not settled" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(said) == 1, [r.getMessage() for r in said]  # once per run, not every epoch (the left list)


class _OwnBN(torch.nn.BatchNorm2d):
    """A user's BN subclass that passes its momentum straight to ``F.batch_norm`` (which refuses
    None: a user trial's slim run failed there after training, in the re-estimation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        ).relu()


def test_recalibrate_bn_is_the_cumulative_average_and_runs_a_users_bn() -> None:
    from edgeslim.channels.norm import recalibrate_bn

    images = load_dataset("digits", subset=96, test_subset=8).train_x.float() / 16
    batches = list(images.split(32))
    own = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), _OwnBN(4, momentum=0.3)).eval()
    recalibrate_bn(own, batches)
    feats = torch.cat([own[0](b) for b in batches]).detach()
    mean = feats.mean((0, 2, 3))
    assert torch.allclose(own[1].running_mean, mean, atol=1e-5)  # the average over the three batches
    assert own[1].momentum == 0.3 and not own.training  # its settings and mode are restored
    plain = torch.nn.Sequential(own[0], torch.nn.BatchNorm2d(4))
    plain[1].momentum = None
    with torch.no_grad():
        plain.train()
        for b in batches:
            plain(b)
    assert torch.allclose(own[1].running_var, plain[1].running_var, atol=1e-5)  # PyTorch's own average


class _Twice(torch.nn.Module):
    """One BN called twice in a forward (a shared norm): PyTorch averages per call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv2(self.bn(self.conv1(x)).relu()))


def test_recalibrate_bn_averages_per_call_like_pytorch() -> None:
    from edgeslim.channels.norm import recalibrate_bn

    images = load_dataset("digits", subset=64, test_subset=8).train_x.float() / 16
    batches = list(images.split(32))
    torch.manual_seed(0)
    ours = _Twice().eval()
    ref = _Twice()
    ref.load_state_dict(ours.state_dict())
    ref.bn.momentum = None
    with torch.no_grad():
        for b in batches:
            ref(b)
    recalibrate_bn(ours, batches)
    assert torch.allclose(ours.bn.running_mean, ref.bn.running_mean, atol=1e-6)
    assert torch.allclose(ours.bn.running_var, ref.bn.running_var, atol=1e-6)
