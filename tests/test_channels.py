"""The channel model (edgeslim.channels): one BatchNorm definition, the hook protocol, one
lambda/shrink/budget rule, and budget settings that reach the resource model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeslim.channels.hooks import METHODS, TrainHook, register_method
from edgeslim.channels.norm import bn_layers, is_batchnorm
from edgeslim.counting import bn_stats
from edgeslim.errors import EdgeslimError
from edgeslim.pipelines.slim import budget_settings
from edgeslim.sparsity.prox import ProximalSlimming, check_strength
from edgeslim.train import methods


class _BatchNormAct2d(nn.BatchNorm2d):
    """The shape of timm's BatchNormAct2d: a BatchNorm2d subclass with an activation."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


@pytest.mark.parametrize(
    "layer",
    [nn.BatchNorm1d(4), nn.BatchNorm2d(4), nn.BatchNorm3d(4), nn.SyncBatchNorm(4), _BatchNormAct2d(4)],
    ids=lambda m: type(m).__name__,
)
def test_every_batchnorm_kind_is_a_bn_layer(layer: nn.Module) -> None:
    model = nn.Sequential(nn.Identity(), layer)
    assert is_batchnorm(layer)
    assert [n for n, _ in bn_layers(model)] == ["1"]
    assert bn_stats(model).channels == 4


def test_instance_group_and_non_affine_norms_are_not_slimmed() -> None:
    model = nn.Sequential(
        nn.InstanceNorm2d(4, affine=True), nn.GroupNorm(2, 4), nn.BatchNorm2d(4, affine=False)
    )
    assert not is_batchnorm(model[0]) and not is_batchnorm(model[1]) and is_batchnorm(model[2])
    assert bn_layers(model) == []


def test_a_batchnorm3d_model_is_slimmed() -> None:
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU())
    assert ProximalSlimming(model, lam=0.1).names == ["1"]


def test_method_registry_is_passive_and_train_reexports_it() -> None:
    assert methods.register_method is register_method
    assert {"baseline", "subgradient", "proximal"} <= set(methods.list_methods())
    assert set(methods.list_methods()) == set(METHODS)
    assert issubclass(type(methods.create_method("subgradient", nn.Sequential(nn.BatchNorm2d(2)))), TrainHook)


@pytest.mark.parametrize(
    ("lam", "shrink", "budget", "msg"),
    [
        (0.1, 1.0, False, "give lam or shrink, not both"),
        (None, 1.0, True, "shrink and a budget target exclude each other"),
    ],
)
def test_penalty_strength_has_one_source(lam, shrink, budget, msg) -> None:
    with pytest.raises(EdgeslimError, match=msg):
        check_strength(lam, shrink, budget)
    check_strength(lam, None, budget)  # lam alone, or lam as the budget's start, is fine


def test_latency_budget_batch_can_be_set() -> None:
    opts = {"target_latency": "8ms", "profile": "host-cpu"}
    assert budget_settings(opts).batch == 1
    assert budget_settings({**opts, "latency_batch": 8}).batch == 8
    with pytest.raises(EdgeslimError, match="only applies with a budget"):
        budget_settings({"latency_batch": 8})
